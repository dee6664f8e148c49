"""Guardrails at the gateway: PII and secret masking, moderation, deny lists, input size (docs/guardrails.md)."""
