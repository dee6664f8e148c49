"""One key per non-empty alias in a team. Existing duplicates are renamed first, deterministically: in each
(team, alias) the oldest key (created_at, then id) keeps the alias, the others become ``alias-2``,
``alias-3``... (skipping names already used in the team, cut to fit 200 characters)."""

from django.db import migrations, models

ALIAS_MAX_LENGTH = 200


def rename_duplicates(apps, schema_editor):
    VirtualKey = apps.get_model("keys", "VirtualKey")
    duplicated = (
        VirtualKey.objects.exclude(alias="")
        .values("team_id", "alias")
        .annotate(n=models.Count("id"))
        .filter(n__gt=1)
        .order_by("team_id", "alias")
    )
    for group in duplicated:
        team_id, alias = group["team_id"], group["alias"]
        used = set(VirtualKey.objects.filter(team_id=team_id).values_list("alias", flat=True))
        keys = VirtualKey.objects.filter(team_id=team_id, alias=alias).order_by("created_at", "id")
        suffix_number = 1
        for key in list(keys)[1:]:
            while True:
                suffix_number += 1
                suffix = f"-{suffix_number}"
                candidate = alias[: ALIAS_MAX_LENGTH - len(suffix)] + suffix
                if candidate not in used:
                    break
            used.add(candidate)
            VirtualKey.objects.filter(pk=key.pk).update(alias=candidate)


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0006_virtualkey_cache_ttl_seconds"),
    ]

    operations = [
        migrations.RunPython(rename_duplicates, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="virtualkey",
            constraint=models.UniqueConstraint(
                condition=models.Q(("alias", ""), _negated=True),
                fields=("team", "alias"),
                name="keys_virtualkey_alias_unique_per_team",
                violation_error_message="another key in this team already has this alias.",
            ),
        ),
    ]
