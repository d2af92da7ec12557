"""Driving a guest from a debugger's point of view: the `Cpu` handle scripts get as
`machine.vcpus[i]`, breakpoints and watchpoints, and the gdb remote stub (`gdbstub`)."""
