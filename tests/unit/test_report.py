from pyvisor.machine.report import FaultReport, Instruction, disassemble


def test_disassemble_64_bit():
    code = bytes.fromhex("4889e5" "0f0b" "f4")  # mov rbp, rsp; ud2; hlt
    ins = disassemble(code, 0x100000)
    assert [i.text for i in ins] == ["mov rbp, rsp", "ud2", "hlt"]
    assert ins[1].address == 0x100003 and ins[1].raw == b"\x0f\x0b"


def test_disassemble_16_bit_differs():
    code = bytes.fromhex("b80100")  # mov ax, 1 in 16-bit mode
    assert disassemble(code, 0, bits=16)[0].text == "mov ax, 1"


def test_format_marks_rip_and_shows_note():
    report = FaultReport(reason="triple fault (KVM_EXIT_SHUTDOWN)", vcpu=0,
                         regs={"rip": 0x100000, "rsp": 0x8FF0},
                         control={"cr0": 0x80000011},
                         code_address=0x100000,
                         code=[Instruction(0x100000, b"\x0f\x0b", "ud2")],
                         note="PVM explanation")
    text = report.format()
    assert "triple fault" in text and "vCPU 0" in text
    assert "RIP=0000000000100000" in text
    assert "=> 0000000000100000  0f0b" in text and "ud2" in text
    assert "note: PVM explanation" in text
