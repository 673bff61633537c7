"""Saving a device edited on the devices screen into the devices file: in place, the rest of
the file as it was, atomically, and read back by the reader that ``edgescope ls`` uses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from edgescope_tui.discovery import (
    SshTarget,
    TargetError,
    TcpTarget,
    load_devices_file,
    save_device,
)
from edgescope_tui.discovery.watch import Discovery
from edgescope_tui.screens.devices import parse_any_target, target_text

FILE = """\
# my lab
ssh_config_hosts = false

[[device]]
name = "pi"
ssh = "pi@10.0.0.9"
# the pi on the bench

[[device]]
name = "jetson"
address = "10.0.0.5:7313"
token_file = "OLD"

[[device]]   # the spare
address = "10.0.0.6:7313"
"""


def token(tmp_path: Path, name: str, value: str) -> str:
    p = tmp_path / name
    p.write_text(value + "\n")
    p.chmod(0o600)
    return str(p)


def test_an_edited_entry_is_rewritten_in_place(tmp_path: Path) -> None:
    f = tmp_path / "devices.toml"
    f.write_text(FILE.replace("OLD", token(tmp_path, "wrong.token", "wrong-token-0123456789")))
    f.chmod(0o640)
    old = load_devices_file(f).targets[1]
    assert isinstance(old, TcpTarget) and old.token == "wrong-token-0123456789"
    right = token(tmp_path, "right.token", "right-token-0123456789")
    new = parse_any_target("10.0.0.5:7313", right, "jetson-orin")
    assert save_device(f, new, old) == 2
    text = f.read_text()
    # The other entries, the comments and the top-level key are as they were.
    assert text.startswith('# my lab\nssh_config_hosts = false\n\n[[device]]\nname = "pi"')
    assert "# the pi on the bench\n" in text and "[[device]]   # the spare" in text
    assert text.count("[[device]]") == 3
    loaded = load_devices_file(f).targets
    assert loaded[0] == SshTarget("10.0.0.9", "pi", name="pi")
    assert loaded[1] == TcpTarget("10.0.0.5", 7313, "right-token-0123456789", "jetson-orin", right)
    assert loaded[2] == TcpTarget("10.0.0.6", 7313)
    assert os.stat(f).st_mode & 0o777 == 0o640  # replaced, its mode kept
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_device_not_in_the_file_is_added_at_its_end(tmp_path: Path) -> None:
    f = tmp_path / "edgescope" / "devices.toml"  # neither the file nor its folder exists yet
    ssh = parse_any_target("ssh://root@box:2222/7400", "~/box.token", 'the "box"')
    assert save_device(f, ssh) == 1
    assert save_device(f, TcpTarget("::1", 7313)) == 2
    assert load_devices_file(f).targets == (
        SshTarget("box", "root", 2222, 7400, 'the "box"', "~/box.token"),
        TcpTarget("::1", 7313),
    )
    assert parse_any_target(target_text(ssh)) == SshTarget("box", "root", 2222, 7400)


def test_a_file_that_cannot_be_edited_is_left_as_it_was(tmp_path: Path) -> None:
    f = tmp_path / "devices.toml"
    inline = 'device = [{ address = "10.0.0.5:7313" }]\n'
    f.write_text(inline)
    with pytest.raises(TargetError, match=r"write its devices as \[\[device\]\] tables"):
        save_device(f, TcpTarget("10.0.0.7", 7313))
    assert f.read_text() == inline
    f.write_text("[[device]\n")
    with pytest.raises(TargetError, match="is not valid TOML"):
        save_device(f, TcpTarget("10.0.0.7", 7313))
    link = tmp_path / "link.toml"
    link.symlink_to(tmp_path / "elsewhere.toml")
    with pytest.raises(TargetError, match="link"):
        save_device(link, TcpTarget("10.0.0.7", 7313))
    assert not (tmp_path / "elsewhere.toml").exists()


def test_one_address_twice_is_two_devices() -> None:
    """Discovery keys devices by address: a second entry for it is listed as its duplicate,
    not dropped; adding the address again gives that device the new target."""
    a = TcpTarget("10.0.0.5", 7313, name="jetson")
    b = TcpTarget("10.0.0.5", 7313, name="jetson-2", token="t" * 16)
    d = Discovery([(a, "config"), (b, "config")], mdns=False, recheck=0)
    assert [(x.label, x.duplicate_of) for x in d.devices.values()] == [
        ("jetson", ""),
        ("jetson-2", "jetson"),
    ]
    assert list(d.devices) == ["tcp:10.0.0.5:7313", "tcp:10.0.0.5:7313#2"]


@pytest.mark.asyncio
async def test_editing_to_another_address_moves_the_row() -> None:
    """Another address is another key: the old row goes, the new one comes, as the listed
    address's duplicate where it is listed already; every change is said to the screen."""
    seen: list[tuple[str, str | None]] = []
    a = TcpTarget("127.0.0.1", 1, name="a")
    b = TcpTarget("127.0.0.1", 2, name="b")
    d = Discovery(
        [(a, "config"), (b, "config")],
        mdns=False,
        recheck=0,
        on_change=lambda key, dev: seen.append((key, dev.label if dev else None)),
    )
    await d.start()
    try:
        moved = d.edit("tcp:127.0.0.1:1", TcpTarget("127.0.0.1", 3, name="a3"))
        assert moved.key == "tcp:127.0.0.1:3" and moved.origin == "config"
        assert ("tcp:127.0.0.1:1", None) in seen
        onto = d.edit(moved.key, TcpTarget("127.0.0.1", 2, name="b-too"))
        assert (onto.key, onto.duplicate_of) == ("tcp:127.0.0.1:2#2", "b")
        assert [x.label for x in d.devices.values()] == ["b", "b-too"]
        await d.settle(5)
        assert {x.state for x in d.devices.values()} == {"unreachable"}
    finally:
        await d.close()
