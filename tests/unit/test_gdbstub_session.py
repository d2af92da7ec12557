"""The gdb stub's packet handlers against a fake Machine (tests/unit/gdbstub_fake.py).
Packet and reply formats are the GDB manual's (appendix E, "Packets", "Stop Reply
Packets", "General Query Packets")."""
import pytest

from gdbstub_fake import FakeMachine, outcome
from pyvisor.debug.gdbstub import registers
from pyvisor.debug.gdbstub.protocol import unescape_binary
from pyvisor.debug.gdbstub.session import Resume, Session, watch_chunks
from pyvisor.errors import KvmError
from pyvisor.machine.vcpu_runner import StepAborted


def session(cpus=1, **kw):
    m = FakeMachine(cpus=cpus, **kw)
    return m, Session(m)


def negotiated(cpus=1, **kw):
    m, s = session(cpus, **kw)
    s.handle(b"qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+")
    return m, s


def never_interrupted():
    return None


# --- queries ----------------------------------------------------------------------------
def test_qsupported_offers_only_the_stop_reasons_gdb_knows():
    m, s = session()
    reply = s.handle(b"qSupported:multiprocess+;swbreak+;xmlRegisters=i386")
    features = reply.split(b";")
    assert b"PacketSize=4000" in features
    assert {b"qXfer:features:read+", b"QStartNoAckMode+", b"vContSupported+",
            b"swbreak+"} <= set(features)
    assert b"hwbreak+" not in features
    assert b"multiprocess+" not in features


def test_target_xml_in_chunks():
    m, s = session()
    data = b""
    offset = 0
    while True:
        reply = s.handle(b"qXfer:features:read:target.xml:%x,%x" % (offset, 0x100))
        assert reply[:1] in (b"m", b"l")
        chunk = unescape_binary(reply[1:])
        data += chunk
        offset += len(chunk)
        if reply[:1] == b"l":
            break
    assert data == registers.TARGET_XML
    assert s.handle(b"qXfer:features:read:target.xml:%x,10" % len(data)) == b"l"
    assert s.handle(b"qXfer:features:read:other.xml:0,100") == b"E00"


def test_threads_are_vcpus():
    m, s = session(cpus=2)
    assert s.handle(b"qfThreadInfo") == b"m1,2"
    assert s.handle(b"qsThreadInfo") == b"l"
    assert s.handle(b"qC") == b"QC1"
    assert s.handle(b"T2") == b"OK"
    assert s.handle(b"T3") == b"E01"
    assert s.handle(b"T0") == b"E01"
    assert s.handle(b"Hg2") == b"OK"
    assert s.handle(b"qC") == b"QC2"
    assert s.handle(b"Hg3") == b"E01"
    assert s.handle(b"Hg0") == b"OK" and s.g_thread == 1      # any: unchanged
    assert s.handle(b"Hc-1") == b"OK"
    assert s.handle(b"Hg-1") == b"E01"
    assert bytes.fromhex(s.handle(b"qThreadExtraInfo,2").decode()) == b"vCPU 1"
    assert s.handle(b"qAttached") == b"1"
    assert s.handle(b"qAttached:1") == b"1"


def test_unknown_packets_get_the_empty_reply():
    m, s = session()
    for p in (b"vMustReplyEmpty", b"qTStatus", b"qOffsets", b"!", b"vKill;1", b"Z9,0,1"):
        assert s.handle(p) == b"", p
    assert s.handle(b"qSymbol::") == b"OK"


def test_malformed_packets_are_errors_not_exceptions():
    m, s = session()
    for p in (b"mzz,4", b"m10", b"M10,2:1", b"P0", b"p", b"Gxyz", b"Z0,10", b"Tq", b"Hgz",
              b"X10,1:}", b"c1" + b"0" * 20):
        assert s.handle(p) == b"E01", p


# --- registers ----------------------------------------------------------------------------
def test_g_reads_the_selected_thread_and_p_p_round_trip():
    m, s = session(cpus=2)
    m.vcpus[1].regs.rax = 0x42
    s.handle(b"Hg2")
    g = bytes.fromhex(s.handle(b"g").decode())
    assert g[:8] == (0x42).to_bytes(8, "little")
    assert s.handle(b"P10=0000100000000000") == b"OK"          # rip of vCPU 1
    assert m.vcpus[1].regs.rip == 0x100000 and m.vcpus[0].regs.rip == 0
    assert s.handle(b"p10") == b"0000100000000000"
    assert s.handle(b"p3d") == b"0090000000000000"             # cr3 = 0x9000
    g = bytearray(g)
    g[8:16] = (7).to_bytes(8, "little")
    assert s.handle(b"G" + g.hex().encode()) == b"OK"
    assert m.vcpus[1].regs.rbx == 7
    assert s.handle(b"p12") and s.handle(b"P12=33000000") == b"E01"   # cs is read-only


# --- memory -----------------------------------------------------------------------------
def test_memory_reads_writes_and_faults():
    m, s = session()
    m.map(0x1000, bytes(range(16)))
    assert s.handle(b"m1004,4") == b"04050607"
    assert s.handle(b"m0,4") == b"E14"
    assert s.handle(b"m1ffe,4") == b"0000"                    # up to the unmapped page
    assert s.handle(b"m1000,0") == b""
    assert s.handle(b"M1000,2:abcd") == b"OK"
    assert m.vcpus[0].read_virt(0x1000, 2) == b"\xab\xcd"
    assert s.handle(b"M0,1:00") == b"E14"
    assert s.handle(b"X1002,0:") == b"OK"                     # gdb's probe
    assert s.handle(b"X1002,3:}\x03}]a") == b"OK"             # '#', '}' escaped, 'a'
    assert m.vcpus[0].read_virt(0x1002, 3) == b"#}a"
    assert s.handle(b"X1002,2:a") == b"E01"                   # length mismatch


def test_memory_reads_are_bounded_by_the_packet_size():
    m, s = session()
    m.map(0, bytes(0x10000))
    reply = s.handle(b"m0,10000")
    assert 0 < len(reply) < 0x4000


def test_memory_goes_through_the_selected_vcpu():
    m, s = session(cpus=2)
    reads = []
    original = m.vcpus[1].read_virt
    m.vcpus[1].read_virt = lambda a, n: reads.append(a) or original(a, n)
    m.map(0x2000, b"\x11")
    s.handle(b"Hg2")
    assert s.handle(b"m2000,1") == b"11"
    assert reads == [0x2000]


# --- breakpoints and watchpoints --------------------------------------------------------
def test_z0_is_a_software_breakpoint_and_falls_back_once():
    m, s = session(sw_allowed=False)
    assert s.handle(b"Z0,100000,1") == b"OK"
    assert s.handle(b"Z0,100000,1") == b"OK"                  # idempotent
    assert s.handle(b"Z0,100010,1") == b"OK"
    assert [c for c in m.calls if c[0] == "breakpoint"] == [
        ("breakpoint", 0x100000, "hw"), ("breakpoint", 0x100010, "hw")]
    assert s.handle(b"z0,100000,1") == b"OK"
    assert s.handle(b"z0,100000,1") == b"OK"
    assert [p.address for p in m.points] == [0x100010]


def test_z1_is_hardware_and_runs_out_of_debug_registers():
    m, s = session()
    for i in range(4):
        assert s.handle(b"Z1,%x,1" % (0x1000 + i)) == b"OK"
    assert s.handle(b"Z1,2000,1") == b"E01"
    assert all(p.kind == "hw" for p in m.points)
    assert s.handle(b"Z0,2000,1;X2,0a") == b"OK"              # conditions are ignored


def test_watchpoints_map_to_write_and_rw_in_aligned_pieces():
    m, s = session()
    assert s.handle(b"Z2,3000,4") == b"OK"
    assert s.handle(b"Z3,3008,8") == b"OK"
    assert s.handle(b"Z4,3011,3") == b"OK"                    # 1 + 2 bytes
    assert [(p.address, p.length, p.access) for p in m.points] == [
        (0x3000, 4, "write"), (0x3008, 8, "rw"), (0x3011, 1, "rw"), (0x3012, 2, "rw")]
    assert s.handle(b"z4,3011,3") == b"OK"
    assert len(m.points) == 2


def test_a_watchpoint_that_does_not_fit_takes_nothing():
    m, s = session()
    assert s.handle(b"Z2,4001,20") == b"E01"                  # 7 pieces, 4 debug registers
    assert s.handle(b"Z2,4000,ffffffff") == b"E01"            # refused before splitting
    assert s.handle(b"Z2,4000,0") == b"E01"
    assert s.handle(b"Z1,100,1") == b"OK"
    assert s.handle(b"Z1,101,1") == b"OK"
    assert s.handle(b"Z2,4001,4") == b"E01"                   # 1+2+1: three slots, two left
    assert len(m.points) == 2


def test_watch_chunks():
    assert watch_chunks(0x1000, 8) == [(0x1000, 8)]
    assert watch_chunks(0x1001, 7) == [(0x1001, 1), (0x1002, 2), (0x1004, 4)]
    assert watch_chunks(0x1000, 16) == [(0x1000, 8), (0x1008, 8)]
    assert watch_chunks(0x1006, 4) == [(0x1006, 2), (0x1008, 2)]


# --- resuming and stop replies ---------------------------------------------------------
def test_continue_until_a_hardware_breakpoint():
    m, s = negotiated(cpus=2)
    s.handle(b"Z1,100000,1")
    action = s.handle(b"vCont;c")
    assert action == Resume(step=None)
    m.wait_outcomes = [None, None, outcome("breakpoint", vcpu=1, point=m.points[0])]
    assert s.resume(action, never_interrupted) == b"T05thread:2;hwbreak:;"
    assert ("resume",) in m.calls
    assert s.handle(b"qC") == b"QC2"                          # the stopped vCPU is current
    assert s.handle(b"?") == b"T05thread:2;hwbreak:;"


def test_swbreak_reported_for_z0_only_when_negotiated():
    m, s = negotiated()
    s.handle(b"Z0,100000,1")
    m.wait_outcomes = [outcome("breakpoint", point=m.points[0])]
    assert s.resume(s.handle(b"c"), never_interrupted) == b"T05thread:1;swbreak:;"
    m, s = session()
    s.handle(b"Z0,100000,1")
    m.wait_outcomes = [outcome("breakpoint", point=m.points[0])]
    assert s.resume(s.handle(b"c"), never_interrupted) == b"T05thread:1;"
    script_bp = m.add_breakpoint(0x200000)                     # not gdb's: no reason given
    m.wait_outcomes = [outcome("breakpoint", point=script_bp)]
    assert s.resume(s.handle(b"c"), never_interrupted) == b"T05thread:1;"


def test_watchpoint_stop_names_the_kind_and_data_address():
    m, s = negotiated()
    s.handle(b"Z2,3000,4")
    s.handle(b"Z3,3010,8")
    s.handle(b"Z4,3021,3")                                    # pieces at 0x3021 and 0x3022
    for handle, reason in zip(m.points, (b"watch", b"rwatch", b"awatch", b"awatch")):
        m.wait_outcomes = [outcome("watchpoint", point=handle)]
        assert s.resume(s.handle(b"c"), never_interrupted) == \
            b"T05thread:1;" + reason + b":%x;" % handle.address


def test_ctrl_c_pauses_the_machine():
    m, s = session(cpus=2)
    events = iter([None, "interrupt"])
    reply = s.resume(s.handle(b"c"), lambda: next(events))
    assert reply == b"T02thread:1;"
    assert m.state == "paused" and m.calls[-1] == ("pause",)


def test_gdb_going_away_while_running_detaches():
    m, s = session()
    s.handle(b"Z1,100000,1")
    assert s.resume(s.handle(b"c"), lambda: "gone") is None
    assert m.points == [] and m.state == "running"


def test_step_steps_only_the_named_vcpu():
    m, s = session(cpus=2)
    assert s.handle(b"vCont?") == b"vCont;c;C;s;S;r"
    action = s.handle(b"vCont;s:2;c")
    assert action == Resume(step=1)
    assert s.resume(action, never_interrupted) == b"T05thread:2;"
    assert [c for c in m.calls if c[0] in ("step", "resume")] == [("step", 1, 1)]
    assert s.handle(b"vCont;S05:1") == Resume(step=0)
    assert s.handle(b"vCont;s:9") == b"E01"
    assert s.handle(b"vCont;t:1") == b"E01"


def test_range_step_goes_on_while_rip_is_in_the_range():
    m, s = session(cpus=2)
    m.vcpus[1].regs.rip = 0x1000
    action = s.handle(b"vCont;r1000,1003:2;c")
    assert action == Resume(step=1, within=(0x1000, 0x1003))
    polls = []
    assert s.resume(action, lambda: polls.append(1)) == b"T05thread:2;"
    assert m.vcpus[1].regs.rip == 0x1003
    assert [c for c in m.calls if c[0] == "step"] == [("step", 1, 1)] * 3
    assert len(polls) == 2                                    # gdb may interrupt meanwhile
    s.handle(b"Z2,3000,8")
    m.vcpus[1].regs.rip = 0x1000
    m.wait_outcomes = [None, outcome("watchpoint", vcpu=1, point=m.points[0])]
    assert s.resume(s.handle(b"vCont;r1000,1010:2"), never_interrupted) == \
        b"T05thread:2;watch:3000;"
    assert m.vcpus[1].regs.rip == 0x1002
    m.vcpus[1].regs.rip = 0x1000
    events = iter([None, "interrupt"])
    assert s.resume(s.handle(b"vCont;r1000,1010:2"), lambda: next(events)) == b"T02thread:2;"


def test_a_step_that_hits_a_watchpoint_says_so():
    m, s = session()
    s.handle(b"Z2,3000,8")
    m.wait_outcomes = [outcome("watchpoint", point=m.points[0])]
    assert s.resume(s.handle(b"vCont;s:1"), never_interrupted) == b"T05thread:1;watch:3000;"


def test_a_step_that_cannot_finish_waits_for_ctrl_c():
    m, s = session(cpus=2)
    m.vcpus[1].step_outcomes = [StepAborted("halted")] * 3
    events = iter([None, None, "interrupt"])
    assert s.resume(s.handle(b"vCont;s:2"), lambda: next(events)) == b"T02thread:2;"
    assert [c for c in m.calls if c[0] == "step"] == [("step", 1, 1)] * 3
    assert m.vcpus[1].regs.rip == 0
    m.vcpus[1].step_outcomes = [StepAborted("halted")]
    assert s.resume(s.handle(b"vCont;s:2"), lambda: "gone") is None
    assert m.state == "running"


def test_s_and_c_with_an_address_move_rip_first():
    m, s = session()
    assert s.handle(b"s100100") == Resume(step=0)
    assert m.vcpus[0].regs.rip == 0x100100
    assert s.handle(b"C05;100200") == Resume(step=None)
    assert m.vcpus[0].regs.rip == 0x100200


def test_the_end_of_the_machine_is_w_or_x():
    for kind, status, reply in (("exit", 3, b"W03"), ("reset", 0, b"W00"),
                                ("poweroff", 0, b"W00"), ("fault", 2, b"X0b"),
                                ("error", 2, b"X09")):
        m, s = session()
        m.wait_outcomes = [outcome(kind, status=status)]
        assert s.resume(s.handle(b"c"), never_interrupted) == reply
        assert s.closing
    m, s = session()
    m.vcpus[0].step_outcomes = [outcome("exit", status=5)]
    assert s.resume(s.handle(b"s"), never_interrupted) == b"W05"


# --- attach, detach, kill ---------------------------------------------------------------
def test_attach_stops_a_running_machine_and_starts_a_created_one_paused():
    m, s = session(state="running")
    s.attach()
    assert m.state == "paused" and s.handle(b"?") == b"T02thread:1;"
    m, s = session(state="created")
    s.attach()
    assert m.calls == [("start", True)] and s.handle(b"?") == b"T05thread:1;"


def test_detach_removes_gdbs_points_and_resumes():
    m, s = session()
    s.handle(b"Z1,100000,1")
    s.handle(b"Z2,3000,8")
    assert s.handle(b"D") == b"OK" and s.closing
    s.detach()
    assert m.points == [] and m.state == "running"


def test_kill_stops_the_machine_without_a_reply():
    m, s = session()
    assert s.handle(b"k") is None
    assert m.state == "stopped" and s.closing


def test_no_ack_mode():
    m, s = session()
    assert not s.no_ack
    assert s.handle(b"QStartNoAckMode") == b"OK"
    assert s.no_ack


class _BrokenCpu:
    """A vCPU whose every ioctl fails (e.g. a machine torn down under the stub)."""

    def __getattr__(self, name):
        raise KvmError("KVM_GET_REGS", 9)


@pytest.mark.parametrize("packet,reply", [(b"g", b"E01"), (b"p10", b"E01"),
                                          (b"m1000,4", b"E14"), (b"Z1,1000,1", b"E01")])
def test_host_errors_are_error_replies(packet, reply):
    m, s = session()
    m.vcpus[0] = _BrokenCpu()

    def fail(*args, **kwargs):
        raise KvmError("KVM_SET_GUEST_DEBUG", 16)
    m.add_breakpoint = fail
    assert s.handle(packet) == reply
