"""The remote account and the ~/.ssh/config entries every benchmark logs in with."""

import pathlib

# The remote side logs in as this user: /bin/sh as its shell and no startup files, so the numbers
# are the transports' and not a login shell's (root's .bashrc here runs pyenv: ~80 ms a session).
BENCH_USER = "outpost-bench"
# The same with /bin/bash as its login shell (Debian's stock, non-interactive-silent .bashrc).
BENCH_BASH_USER = "outpost-bench-bash"


def host_block(alias, port, ssh_dir: pathlib.Path, user=BENCH_USER):
    """An ~/.ssh/config entry for `alias`: 127.0.0.1:`port` as `user`, key and known_hosts in `ssh_dir`."""
    return (f"Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
            f"  IdentityFile {ssh_dir / 'id_ed25519'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {ssh_dir / 'known_hosts'}\n  StrictHostKeyChecking yes\n  BatchMode yes\n")
