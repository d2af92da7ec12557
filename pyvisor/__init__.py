"""pyvisor: a minimal type-2 hypervisor on Linux KVM with a Python control plane."""

__version__ = "0.1.0"
