//! x86-64 CPU-level pieces: the guest physical layout (`layout`), the tables and ring-0 code for
//! guest programs entered directly in 64-bit mode (`descriptors`, `stubs`, `paging`), per-vCPU
//! state (`cpu`) and instructions the VMM completes for this project's KVM (`unemulated`).
//! Loading a guest (a program or Linux) is the `boot` module, a floor above the `Vm`.
pub mod cpu;
pub mod descriptors;
pub mod layout;
pub mod paging;
pub mod stubs;
pub mod unemulated;

/// Errors setting up a vCPU's state.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// A KVM ioctl setting up vCPU state failed.
    #[error("KVM {what}: {source}")]
    Kvm {
        /// What was being set up.
        what: &'static str,
        /// KVM's error.
        source: kvm_ioctls::Error,
    },
    /// KVM's MSR list could not be built.
    #[error("building the MSR list: {0:?}")]
    MsrList(vmm_sys_util::fam::Error),
}

pub(crate) fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> CpuError {
    move |source| CpuError::Kvm { what, source }
}
