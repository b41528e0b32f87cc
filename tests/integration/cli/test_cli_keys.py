"""Handing a ledger a root public key without ever copying the private key: `athar keys new` writes the public
half, `keys show --pub-out` writes it for older keys, and `init --root-public-key` refuses a private key."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from signing.keys import read_private_key, read_public_key
from tests.integration.cli.test_cli_init import athar, one_line


def test_keys_new_writes_the_public_half_that_init_reads(tmp_path: Path) -> None:
    private = tmp_path / "regroot.key"
    made = athar("keys", "new", "--out", str(private))
    assert made.returncode == 0, made.stderr
    public = tmp_path / "regroot.pub"
    assert read_public_key(public) == read_private_key(private).public
    assert "seed" not in public.read_text()
    assert stat.S_IMODE(private.stat().st_mode) == 0o600

    refused = athar("init", "--data-dir", str(tmp_path / "wrong"), "--root-public-key", str(private))
    assert refused.returncode == 2
    line = one_line(refused)
    assert "private key" in line and "regroot.pub" in line
    assert not (tmp_path / "wrong").exists()

    home = tmp_path / "home"
    ok = athar("init", "--data-dir", str(home), "--root-public-key", str(public), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["root_key"] == read_private_key(private).key_id
    assert not (home / "keys" / "root.key").exists()

    again = athar("keys", "new", "--out", str(tmp_path / "other.key"))
    assert again.returncode == 0
    (tmp_path / "other.key").unlink()
    clash = athar("keys", "new", "--out", str(tmp_path / "other.key"))
    assert clash.returncode == 2 and "other.pub already exists" in one_line(clash)
    assert not (tmp_path / "other.key").exists()  # no private key left without its public half


def test_keys_show_gives_a_public_key_file_for_an_existing_private_key(tmp_path: Path) -> None:
    private = tmp_path / "old.key"
    assert athar("keys", "new", "--out", str(private)).returncode == 0
    (tmp_path / "old.pub").unlink()  # as a key made before `keys new` wrote the public half

    out = tmp_path / "handed-over.pub"
    shown = athar("keys", "show", str(private), "--pub-out", str(out), "--json")
    assert shown.returncode == 0, shown.stderr
    assert read_public_key(out) == read_private_key(private).public
    # the JSON that `keys show` prints is itself a public key file
    (tmp_path / "shown.json").write_text(shown.stdout)
    assert json.loads(shown.stdout)["algorithm"] == "ed25519"
    home = tmp_path / "home"
    ok = athar("init", "--data-dir", str(home), "--root-public-key", str(tmp_path / "shown.json"), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["root_key"] == read_private_key(private).key_id

    (tmp_path / "bare.txt").write_text(json.loads(shown.stdout)["public_key"] + "\n")
    bare = athar("init", "--data-dir", str(tmp_path / "h2"), "--root-public-key", str(tmp_path / "bare.txt"))
    assert bare.returncode == 2 and "not an athar key file" in one_line(bare)
