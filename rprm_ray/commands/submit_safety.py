"""What `rprm-ray submit` refuses before anything leaves the machine: an upload holding files that
look like secrets, and a recipe whose results would land in Ray's temporary copy of the code.

Pure functions over the measured upload (`submit.measure_upload`) and the validated recipe."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

# File names (matched case-insensitively against the last path component) that usually hold keys,
# tokens or passwords. Deliberately narrow: a false alarm is fixed by one `excludes` line.
SECRET_NAME_PATTERNS: tuple[str, ...] = (
    ".env", ".env.*", "*.env",
    "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.asc", "*.gpg",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
    "credentials", "credentials.*", ".git-credentials", ".netrc", ".pypirc", ".npmrc", ".htpasswd",
    "auth_token", "kubeconfig", "*service-account*.json", "*secret*.json", "*secret*.yaml",
)
# Directories whose whole content is credentials.
SECRET_DIRS: tuple[str, ...] = (".ssh", ".aws", ".gnupg", ".kube", ".docker")
SHOWN = 8


def looks_like_secret(rel_path: str) -> bool:
    parts = PurePosixPath(rel_path).parts
    if any(part.lower() in SECRET_DIRS for part in parts[:-1]):
        return True
    name = parts[-1].lower() if parts else ""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in SECRET_NAME_PATTERNS)


def secret_like_files(rel_paths: Iterable[str]) -> list[str]:
    return sorted(p for p in rel_paths if looks_like_secret(p))


def secrets_message(found: list[str], working_dir: Path, runtime_env_file: Path | str) -> str | None:
    """One line naming the files that must not be uploaded, or None when there are none."""
    if not found:
        return None
    shown = ", ".join(found[:SHOWN]) + (f" and {len(found) - SHOWN} more" if len(found) > SHOWN else "")
    return (f"working_dir {working_dir} would upload {len(found)} file(s) that look like secrets: {shown}; "
            f"nothing was sent. Move them out, or add them to `excludes` in {runtime_env_file} "
            f"(or to a .rayignore)")


def run_root_message(run_root: Path, recipe_file: Path | str) -> str | None:
    """A relative run_root on a cluster resolves inside Ray's temporary copy of the working_dir
    (session_*/runtime_resources/working_dir_files/...), which is deleted with the Ray session:
    the run's results would vanish without a word."""
    if Path(run_root).is_absolute():
        return None
    return (f"{recipe_file}: run_root {str(run_root)!r} is relative: on the cluster it would resolve inside "
            f"Ray's temporary copy of the working_dir, deleted with the session. Set an absolute path on "
            f"storage every node shares, e.g. --set run_root=/mnt/shared/runs")
