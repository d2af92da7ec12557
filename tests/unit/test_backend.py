from pyvisor.kvm.backend import detect_backend


def fake_host(tmp_path, modules, flags):
    sysmod = tmp_path / "module"
    for m in modules:
        (sysmod / m).mkdir(parents=True)
    sysmod.mkdir(parents=True, exist_ok=True)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu {' '.join(flags)}\n")
    return detect_backend(sysmod, cpuinfo)


def test_pvm_wins_and_explains(tmp_path):
    backend = fake_host(tmp_path, ["kvm", "kvm_pvm"], [])
    assert backend.name == "pvm" and not backend.runs_stock_linux
    assert "emulator" in backend.explanation and "int3" in backend.explanation


def test_intel_and_amd(tmp_path):
    assert fake_host(tmp_path / "a", ["kvm", "kvm_intel"], ["vmx"]).name == "vmx"
    assert fake_host(tmp_path / "b", ["kvm", "kvm_amd"], ["svm"]).name == "svm"
    assert fake_host(tmp_path / "c", [], ["svm"]).runs_stock_linux


def test_unknown(tmp_path):
    assert fake_host(tmp_path, [], []).name == "unknown"
