"""Configuration as code: a YAML file applied through the same services (tenancy, audit) as the admin."""
