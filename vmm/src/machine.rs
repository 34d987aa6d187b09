//! The whole machine, from typed options to a running VM: the seccomp filters compiled, the
//! [`Vm`] created, every requested device plugged through the one device path, the guest loaded.
//! The `vmm` binary parses its command line (the `options` module) and makes one call here.
use std::sync::Arc;

use crate::boot::{BootError, Guest};
use crate::devices::plug::DeviceOptions;
use crate::exit::ExitReason;
use crate::seccomp::SandboxError;
use crate::vcpu::{ExitShortcut, ExitStats};
use crate::vm::{Vm, VmConfig, VmError};

/// Everything a machine is made of.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    /// vCPUs, RAM, console.
    pub vm: VmConfig,
    /// The devices beyond the fixed ones, plugged in this order (PCI slots follow it).
    pub devices: Vec<DeviceOptions>,
    /// What the VM runs.
    pub guest: Guest,
    /// The seccomp filters' mode for every thread.
    pub seccomp: crate::seccomp::Mode,
}

/// Why a machine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The seccomp filters could not be compiled.
    #[error("seccomp: {0}")]
    Seccomp(#[from] SandboxError),
    /// The VM or one of its devices could not be created.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The guest could not be loaded.
    #[error(transparent)]
    Boot(#[from] BootError),
}

/// How a machine's run ended, with what was counted along the way.
pub struct MachineExit {
    /// Why the VM ended.
    pub reason: ExitReason,
    /// Exit counters.
    pub stats: Arc<ExitStats>,
    /// Doorbell writes of every ivshmem device that matched no ioeventfd and reached the VMM.
    pub ivshmem_slow_doorbells: u64,
}

/// A built machine, ready to run.
pub struct Machine {
    vm: Vm,
}

impl Machine {
    /// Builds the machine `config` describes. The seccomp filters are compiled first, before
    /// any VM thread exists (each thread enters its own, see `crate::seccomp`).
    pub fn build(config: &MachineConfig) -> Result<Machine, MachineError> {
        crate::seccomp::configure(config.seccomp)?;
        let mut vm = Vm::new(config.vm.clone())?;
        for device in &config.devices {
            vm.plug(device)?;
        }
        crate::boot::load(&vm, &config.guest)?;
        Ok(Machine { vm })
    }

    /// Lets `shortcut` answer exits before the memory-model dispatch (benchmark floors).
    pub fn set_exit_shortcut(&mut self, shortcut: Arc<dyn ExitShortcut>) {
        self.vm.set_exit_shortcut(shortcut);
    }

    /// The VM (memory report, devices, configuration).
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// Runs the VM until it ends.
    pub fn run(self) -> Result<MachineExit, VmError> {
        let stats = self.vm.stats().clone();
        let ivshmem: Vec<_> = self.vm.devices().ivshmem().cloned().collect();
        let reason = self.vm.run()?;
        Ok(MachineExit {
            reason,
            stats,
            ivshmem_slow_doorbells: ivshmem.iter().map(|d| d.slow_doorbells()).sum(),
        })
    }
}
