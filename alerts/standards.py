"""Standards profiles (alerts/data/standards/*.toml): the limits a site is judged against."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alerts.settings_files import check_keys, checked, parse_toml, standards_texts
from domain.limits import Limit, Profile

_RULE_KEYS = ("pending_s", "clear_s", "critical_after_s")


_PROFILE_KEYS = {"id", "title_zh", "title_en", "standard", "site_kind", "note", "rules", "limits"}


def parse_profile(doc: dict, file: str = "standards profile") -> Profile:
    """The profile of `doc`, or SettingsError naming the file, the key and the reason."""
    check_keys(doc, _PROFILE_KEYS, file)
    rules = doc.get("rules", {})
    check_keys(rules, set(_RULE_KEYS), file, "rules")
    head = {k: checked(str, doc.get(k), file, k) for k in ("id", "standard")}
    limits = {}
    for param, spec in doc.get("limits", {}).items():
        merged = {k: rules[k] for k in _RULE_KEYS if k in rules} | spec
        # The parameter, standard and profile of a limit come from the file, not the table.
        check_keys(
            spec,
            set(Limit.__slots__) - {"parameter", "standard", "profile"},
            file,
            f"limits.{param}",
        )
        limits[param] = checked(
            Limit,
            {**merged, "parameter": param, "standard": head["standard"], "profile": head["id"]},
            file,
            f"limits.{param}",
        )
    return Profile(
        id=head["id"],
        title_zh=checked(str, doc.get("title_zh"), file, "title_zh"),
        title_en=checked(str, doc.get("title_en"), file, "title_en"),
        standard=head["standard"],
        site_kind=checked(str, doc.get("site_kind"), file, "site_kind"),
        limits=limits,
        note=checked(str, doc.get("note", ""), file, "note"),
    )


@cache
def builtin_profiles() -> dict[str, Profile]:
    """The packaged profiles, with the config dir's standards/*.toml replacing or adding."""
    out = {}
    for file, text in standards_texts().values():
        p = parse_profile(parse_toml(file, text), file)
        out[p.id] = p
    return out


def load_profile_file(path: Path) -> Profile:
    return parse_profile(parse_toml(str(path), path.read_text("utf-8")), str(path))
