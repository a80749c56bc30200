"""`netdsl doctor` says whether the CPU has VNNI, and warns about int8 without it."""

from __future__ import annotations

import json

from helpers import netdsl_main

import netdsl.machine
from netdsl.machine import NO_VNNI_WARNING, cpu_int8

FLAGS = "fpu vme sse sse2 avx avx2 fma avx512f avx512bw"


def test_cpu_int8_reads_the_vnni_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {FLAGS} avx512_vnni\n")
    assert cpu_int8(str(info), "x86_64") == {"arch": "x86_64", "vnni": True, "flags": ["avx512_vnni"]}
    info.write_text(f"processor\t: 0\nflags\t\t: {FLAGS}\n")
    assert cpu_int8(str(info), "x86_64")["vnni"] is False
    assert cpu_int8(str(info), "aarch64")["vnni"] is None  # not x86: cannot be told from these flags
    assert cpu_int8(str(tmp_path / "missing"), "x86_64")["vnni"] is None


def test_doctor_warns_without_vnni(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {FLAGS}\n")
    real = netdsl.machine.cpu_int8
    monkeypatch.setattr(netdsl.machine, "cpu_int8", lambda: real(str(info), "x86_64"))
    rc, out, err = netdsl_main("doctor")
    assert rc == 0, err
    assert "int8 dot products (VNNI): no" in out and "warning: " + NO_VNNI_WARNING[:60] in out.replace("\n", " ")
    rc, out, _ = netdsl_main("doctor", "--json")
    cpu = json.loads(out)["cpu"]
    assert cpu["vnni"] is False and cpu["warning"] == NO_VNNI_WARNING
    info.write_text(f"processor\t: 0\nflags\t\t: {FLAGS} avx_vnni\n")
    rc, out, _ = netdsl_main("doctor")
    assert "int8 dot products (VNNI): yes (avx_vnni)" in out and "warning: this CPU" not in out
