"""The TLS credentials a compose or stack file hands out (owned here, for compose_maker.py): their
file names, issuing the missing ones with the project's own command (client/cmd/certs, on the
host's Go or, without it, in GO_IMAGE under docker run), and letting each container's user read
its own 0600 key through one POSIX ACL entry (Compose ignores uid/gid/mode for file secrets).
The standard library only.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT_DIR = os.path.join(ROOT, "client")
DEFAULT_GO_IMAGE = "golang:1.26"
CA_FILE = "ca.pem"
SERVER_FILES = ("server.pem", "server-key.pem")
CERTS_TIMEOUT = 600  # seconds for the issuing command, a first `go run` (or image start) included
# The containers' users, numeric (the client image is scratch): the Dockerfiles set the same ones,
# and each reads only its own key (docs/swarm.md, "Hardened containers").
SERVER_UID = 10001
AGENCY_UID = 10002


def agency_files(agency: int) -> tuple[str, str]:
    """Agency `agency`'s certificate and key file names (client/internal/certs)."""
    return f"agency-{agency}.pem", f"agency-{agency}-key.pem"


def credential_files(agencies: int) -> list[str]:
    """Every file the containers of a run with `agencies` agencies are handed (not ca-key.pem)."""
    files = [CA_FILE, *SERVER_FILES]
    for agency in range(1, agencies + 1):
        files.extend(agency_files(agency))
    return files


def _posix_acl(entries: list[tuple[int, int, int]]) -> bytes:
    """The system.posix_acl_access value of (tag, perm, id) entries (linux/posix_acl_xattr.h)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries)


def grant_read(path: str, uid: int) -> None:
    """Let `uid` (a container's user) read `path`, one more POSIX ACL entry, and no one else: the
    owner keeps its permissions, the group and others theirs (none, for a 0600 key)."""
    mode = os.stat(path).st_mode
    owner, group, other = (mode >> 6) & 7, (mode >> 3) & 7, mode & 7
    try:  # with an ACL the mode's group bits are its mask: the group's own are in the ACL
        current = os.getxattr(path, "system.posix_acl_access")
    except OSError:
        current = b""
    for offset in range(4, len(current) - 7, 8):
        tag, perm, _ = struct.unpack_from("<HHI", current, offset)
        if tag == 0x04:
            group = perm
    undefined = 0xFFFFFFFF
    acl = _posix_acl([(0x01, owner, undefined), (0x02, 4, uid), (0x04, group, undefined),
                      (0x10, group | 4, undefined), (0x20, other, undefined)])
    os.setxattr(path, "system.posix_acl_access", acl)


def key_readers(agencies: int) -> dict[str, int]:
    """{key file: the uid of the only container user that reads it}."""
    return {SERVER_FILES[1]: SERVER_UID, **{agency_files(i)[1]: AGENCY_UID for i in range(1, agencies + 1)}}


def grant_keys(secrets_dir: str, agencies: int) -> None:
    """Grant each container's user read access to the key Compose bind-mounts for it."""
    for file, uid in key_readers(agencies).items():
        path = os.path.join(secrets_dir, file)
        try:
            grant_read(path, uid)
        except OSError as err:
            raise SecretsError(
                f"cannot let uid {uid} (the container's user) read {path} with a POSIX ACL ({err.strerror}); "
                f"on a filesystem without ACLs put {secrets_dir} elsewhere (--secrets-dir), or run "
                f"'setfacl -m u:{uid}:r {path}' where it works") from None


class SecretsError(Exception):
    """The credentials could not be issued (no Go and no Docker, or the issuing command failed)."""


def secrets_problems(secrets_dir: str, agencies: int) -> list[str]:
    if os.path.exists(secrets_dir) and not os.path.isdir(secrets_dir):
        return [f"secrets dir {secrets_dir} exists and is not a directory"]
    problems = []
    for file in credential_files(agencies):
        path = os.path.join(secrets_dir, file)
        if os.path.isdir(path):
            problems.append(
                f"{path} is a directory, not a credential (Docker creates one when it bind-mounts "
                "a missing file); remove it (rmdir) and run again"
            )
        elif os.path.exists(path) and not os.path.isfile(path):
            problems.append(f"{path} is not a regular file")
    return problems


def missing_credentials(secrets_dir: str, agencies: int) -> list[str]:
    return [file for file in credential_files(agencies) if not os.path.isfile(os.path.join(secrets_dir, file))]


def issue_command(secrets_dir: str, agencies: int) -> list[str]:
    """The command that issues the missing credentials of agencies 1..`agencies` (and the CA and
    the server's) into `secrets_dir`: client/cmd/certs with the host's Go, else in GO_IMAGE."""
    certs_args = ["./cmd/certs", "-agencies", str(agencies)]
    if shutil.which("go"):
        return ["go", "run", "-mod=vendor", *certs_args, "-dir", os.path.abspath(secrets_dir)]
    if not shutil.which("docker"):
        raise SecretsError(
            "issuing the TLS credentials needs Go (go on PATH) or Docker (to run it in GO_IMAGE); "
            "neither was found"
        )
    image = os.environ.get("GO_IMAGE") or DEFAULT_GO_IMAGE
    user = [f"--user={os.getuid()}:{os.getgid()}"] if hasattr(os, "getuid") else []  # files owned by the user
    return [
        "docker", "run", "--rm", *user,
        "-e", "CGO_ENABLED=0", "-e", "GOFLAGS=-mod=vendor -buildvcs=false", "-e", "GOTOOLCHAIN=local",
        "-e", "GOPROXY=off", "-e", "HOME=/tmp", "-e", "GOCACHE=/tmp/go-cache", "-e", "GOMODCACHE=/tmp/go-mod",
        "-v", f"{CLIENT_DIR}:/src:ro", "-v", f"{os.path.abspath(secrets_dir)}:/out", "-w", "/src",
        image, "go", "run", "-mod=vendor", *certs_args, "-dir", "/out",
    ]


def ensure_secrets(secrets_dir: str, agencies: int) -> list[str]:
    """Issue every missing credential of the server and agencies 1..`agencies` into `secrets_dir`
    (never overwriting one), printing `created <secrets-dir>/<file>` for each; returns their names.
    Runs nothing when none is missing."""
    if not missing_credentials(secrets_dir, agencies):
        return []
    os.makedirs(secrets_dir, mode=0o700, exist_ok=True)  # the user's, also when Docker issues
    command = issue_command(secrets_dir, agencies)
    try:
        result = subprocess.run(command, cwd=CLIENT_DIR, capture_output=True, text=True,
                                timeout=CERTS_TIMEOUT, env={**os.environ, "CGO_ENABLED": "0"})
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SecretsError(f"issuing the TLS credentials ({command[0]}): {err}") from None
    created = []
    for line in result.stdout.splitlines():
        if line.startswith("created "):
            name = line.rsplit("/", 1)[-1]
            created.append(name)
            print(f"created {os.path.join(secrets_dir, name)}")
    if result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip() or f"exit code {result.returncode}"
        raise SecretsError(f"issuing the TLS credentials ({' '.join(command[:2])} ... cmd/certs) failed:\n{detail}")
    still = missing_credentials(secrets_dir, agencies)
    if still:
        raise SecretsError(f"the issuing command left {', '.join(still)} missing in {secrets_dir}")
    return created
