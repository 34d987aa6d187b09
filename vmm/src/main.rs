//! `vmm`: run a guest program or a Linux kernel in a KVM virtual machine.
//!
//! Exit status: the guest's exit code (testdev EXIT register), 0 after an i8042 reset or
//! SIGINT/SIGTERM, 3 when a guest program took an unexpected exception, 2 on a triple fault, 1 on
//! VMM errors (with a message on stderr).
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;

use vmm::boot::{BootError, Guest};
use vmm::devices::plug::DeviceOptions;
use vmm::machine::{Machine, MachineConfig, MachineError};
use vmm::vm::{SerialConfig, VmConfig, VmError};

#[derive(Parser, Debug)]
#[command(
    name = "vmm",
    version,
    about = "A small KVM VMM with an ivshmem PCI device"
)]
struct Args {
    /// Guest program: a static x86-64 ELF file, or `builtin:NAME` (see --list-builtins).
    #[arg(long, conflicts_with = "kernel")]
    guest: Option<String>,
    /// Linux kernel (bzImage or vmlinux ELF), booted with the 64-bit boot protocol.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initramfs for --kernel.
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line for --kernel. The VMM appends what Linux should know about its
    /// machine model (`pci=noearly`: no early PCI scans, see docs/boot-time.md).
    #[arg(long, requires = "kernel")]
    cmdline: Option<String>,
    /// Pass --cmdline to Linux exactly as given, without the machine model's parameters
    /// (QEMU microvm's `auto-kernel-cmdline=off`).
    #[arg(long, requires = "kernel")]
    no_auto_cmdline: bool,
    /// Guest RAM: `SIZE[,shared=on][,hugepages=on]` (or `size=SIZE,...`), e.g. 64M, 1G
    /// (multiple of 2M). `shared=on` puts RAM in a memfd that vhost-user backends map (required
    /// by `--device vhost-user-*`); `hugepages=on` uses 2 MiB hugetlb pages.
    #[arg(long, default_value = "64M", value_parser = vmm::options::parse_memory)]
    memory: vmm::memory::MemoryOptions,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Console (serial port and testdev console): stdio, file=PATH or none.
    #[arg(long, default_value = "stdio", value_parser = parse_serial)]
    serial: SerialConfig,
    /// Name of this VM: console lines are prefixed with `[NAME] `.
    #[arg(long)]
    name: Option<String>,
    /// Print `info mtree` and `info flatview` before running (SIGUSR1 prints them while running).
    #[arg(long)]
    dump_memory: bool,
    /// On exit, print one line on stderr: `vmm-stats: ` and a JSON object (`exits_mmio`,
    /// `exits_pio`, `exits_other`, `first_exit_us`, `ivshmem_slow_doorbells`, `rss_kib`, and
    /// `exits_by`: the exits by kind and port or address).
    #[arg(long)]
    stats: bool,
    /// Benchmark floor: answer testdev NOP reads (MMIO and PIO) directly in the vCPU loop, bypassing the
    /// memory-model dispatch.
    #[arg(long)]
    bench_bare_exits: bool,
    /// An ivshmem device: `plain,...` or `doorbell,...`, the same as `--device ivshmem-plain,...`
    /// or `--device ivshmem-doorbell,...` (or QEMU's old `shm=NAME,size=MB`); repeatable.
    /// Plugged after the --device ones.
    #[arg(long, value_name = "VARIANT,KEY=VALUE...", value_parser = vmm::options::parse_ivshmem)]
    ivshmem: Vec<DeviceOptions>,
    /// A device, `KIND,KEY=VALUE,...`, repeatable; PCI slots follow the order given. Kinds:
    ///   ivshmem-plain,path=FILE|shm=NAME|memfd[,size=S][,mapping=slot|trap];
    ///   ivshmem-doorbell,socket=PATH[,vectors=N][,ioeventfd=on|off][,mapping=slot|trap];
    ///   pci-testdev[,vectors=N][,ram=SIZE];
    /// virtio-pci devices served by a vhost-user backend process (need --memory SIZE,shared=on):
    ///   vhost-user-blk,socket=PATH[,queues=N][,queue-size=N][,vectors=N] (queues: one per
    ///     vCPU, at most as many as the backend serves, unless given);
    ///   vhost-user-fs,socket=PATH,tag=NAME[,queues=N][,queue-size=N][,vectors=N];
    ///   vhost-user-vsock,socket=PATH[,queue-size=N][,vectors=N] (vectors: 2, shared by the
    ///     queues, as QEMU's; the others: one per queue plus one, unless given);
    ///   vhost-user,socket=PATH,virtio-id=N,queues=N[,queue-size=N][,config-size=N][,vectors=N];
    /// a virtio-pci network card on an existing TAP, served by the kernel's vhost-net:
    ///   virtio-net,tap=NAME[,mac=XX:XX:XX:XX:XX:XX][,queue-size=N]
    #[arg(long, value_name = "KIND,KEY=VALUE...", value_parser = vmm::options::parse_device, verbatim_doc_comment)]
    device: Vec<DeviceOptions>,
    /// Benchmark floor: measure host memset and memcpy bandwidth on two buffers of SIZE (e.g.
    /// 256M), print `host_memset_gbps=.. host_memcpy_gbps=..` and exit.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    bench_host_memcpy: Option<u64>,
    /// Benchmark: copy FILE into fresh guest RAM as a kernel is loaded, on one thread and on
    /// several, alternated 5 times; print `image_copy: ... one_thread_ms=.. parallel_ms=..` and
    /// exit.
    #[arg(long, value_name = "FILE")]
    bench_image_copy: Option<PathBuf>,
    /// List the built-in guest programs and exit.
    #[arg(long)]
    list_builtins: bool,
    /// Write the built-in guest program NAME (a static ELF) to stdout and exit.
    #[arg(long, value_name = "NAME")]
    dump_builtin: Option<String>,
    /// Arguments for the guest program, e.g. `peers=2 timeout_ms=5000` (space-separated
    /// key=value; the guest reads them with `guest::args`). At most 4095 bytes.
    #[arg(long, value_name = "STRING", conflicts_with = "kernel")]
    guest_args: Option<String>,
    /// seccomp filters on every thread: on (a forbidden syscall stops the VMM with a message),
    /// log (allowed, logged by the kernel: for finding what a list lacks) or off.
    #[arg(long, value_name = "on|off|log", default_value = "on")]
    seccomp: vmm::seccomp::Mode,
}

/// `--bench-host-memcpy` sizes in the shared syntax ([`protocol::size`]); a bare
/// number is MiB, as in QEMU's `-m`.
fn parse_size(s: &str) -> Result<u64, String> {
    protocol::size::parse_size_in(s, 1 << 20).map_err(|e| e.to_string())
}

fn parse_serial(s: &str) -> Result<SerialConfig, String> {
    match s {
        "stdio" => Ok(SerialConfig::Stdio),
        "none" => Ok(SerialConfig::None),
        _ => match s.strip_prefix("file=") {
            Some(path) if !path.is_empty() => Ok(SerialConfig::File(path.into())),
            _ => Err(format!("{s:?}: expected stdio, file=PATH or none")),
        },
    }
}

/// What `--stats` prints, one JSON object.
#[derive(serde::Serialize)]
struct StatsReport {
    #[serde(flatten)]
    exits: vmm::vcpu::ExitCounts,
    /// Doorbell writes that matched no ioeventfd and reached the VMM.
    ivshmem_slow_doorbells: u64,
    /// Peak resident memory of the VMM process.
    rss_kib: u64,
    /// Exits by kind and port or address (`"pio_out 0x3f8"`, `"mmio_read 0xb0000000"`, `"hlt"`).
    exits_by: std::collections::BTreeMap<String, u64>,
}

/// Peak resident memory (VmHWM), from getrusage: no file to open under the seccomp filter.
fn rss_kib() -> Option<u64> {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    u64::try_from(usage.ru_maxrss).ok()
}

fn run(args: Args) -> anyhow::Result<i32> {
    if args.list_builtins {
        for name in vmm::guest_images::names() {
            println!("{name}");
        }
        return Ok(0);
    }
    if let Some(size) = args.bench_host_memcpy {
        println!("{}", vmm::bench::host_memory(size as usize));
        return Ok(0);
    }
    if let Some(path) = &args.bench_image_copy {
        println!("{}", vmm::boot::image::bench_copy(path)?);
        return Ok(0);
    }
    if let Some(name) = &args.dump_builtin {
        let image = vmm::guest_images::find(name)
            .with_context(|| format!("no built-in guest program {name:?}"))?;
        std::io::stdout()
            .write_all(image)
            .context("writing to stdout")?;
        return Ok(0);
    }
    let guest = match (&args.guest, &args.kernel) {
        (Some(guest), None) => Guest::Program {
            image: match guest.strip_prefix("builtin:") {
                Some(name) => match vmm::guest_images::find(name) {
                    Some(image) => image.to_vec(),
                    None => bail!(
                        "no built-in guest program {name:?} (have: {})",
                        vmm::guest_images::names().collect::<Vec<_>>().join(", ")
                    ),
                },
                None => std::fs::read(guest).with_context(|| format!("reading --guest {guest}"))?,
            },
            args: args.guest_args.clone(),
        },
        (None, Some(kernel)) => Guest::Linux {
            kernel: kernel.clone(),
            initrd: args.initrd.clone(),
            cmdline: args
                .cmdline
                .clone()
                .unwrap_or_else(|| vmm::boot::linux::DEFAULT_CMDLINE.to_string()),
            machine_params: !args.no_auto_cmdline,
        },
        _ => bail!("give --guest FILE|builtin:NAME or --kernel FILE (see --help)"),
    };

    let config = MachineConfig {
        vm: VmConfig {
            ram_size: args.memory.size,
            ram_backing: args.memory.backing,
            cpus: args.cpus,
            name: args.name.clone(),
            serial: args.serial.clone(),
            serial_input: args.kernel.is_some() && args.serial == SerialConfig::Stdio,
            exit_breakdown: args.stats,
        },
        devices: args.device.iter().chain(&args.ivshmem).cloned().collect(),
        guest,
        seccomp: args.seccomp,
    };
    // Library errors name the value at fault; the command line's edge names the flag.
    let mut machine = Machine::build(&config).map_err(|e| match e {
        MachineError::Boot(e @ BootError::BadGuestArgs { .. }) => {
            anyhow::Error::new(e).context("--guest-args")
        }
        MachineError::Vm(e @ VmError::CpuCount(_)) => anyhow::Error::new(e).context("--cpus"),
        MachineError::Vm(e @ (VmError::RamSize(_) | VmError::RamAlignment(_))) => {
            anyhow::Error::new(e).context("--memory")
        }
        other => other.into(),
    })?;
    if args.bench_bare_exits {
        machine.set_exit_shortcut(std::sync::Arc::new(vmm::bench::BareNopExits));
    }
    if args.dump_memory {
        eprintln!("{}", machine.vm().memory_report());
    }
    let exit = machine.run()?;
    if let Some(message) = exit.reason.message() {
        eprintln!("{message}");
    }
    if args.stats {
        let report = StatsReport {
            exits: exit.stats.counts(),
            ivshmem_slow_doorbells: exit.ivshmem_slow_doorbells,
            rss_kib: rss_kib().unwrap_or(0),
            exits_by: exit.stats.breakdown(),
        };
        eprintln!("vmm-stats: {}", serde_json::to_string(&report)?);
    }
    Ok(exit.reason.exit_status())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // Before any thread exists (device threads inherit the mask): see block_control_signals.
    if let Err(e) = vmm::vm::block_control_signals() {
        eprintln!("vmm: blocking signals: {e}");
        return ExitCode::from(1);
    }
    // A refused option is a VMM error (status 1, as documented above), not clap's usage status
    // 2, which this binary gives a triple fault.
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    match run(args) {
        Ok(status) => ExitCode::from(status as u8),
        Err(e) => {
            eprintln!("vmm: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// `e` and its causes, joined by ": ", leaving out a cause whose text is already there (many
/// library errors print their source in their own message, which `{:#}` would repeat).
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let line = cause.to_string();
        if text.contains(&line) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&line);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(vmm::boot::BootError::ReadImage {
            path: "/x".into(),
            source: io,
        })
        .context("booting");
        assert_eq!(
            error_chain(&e),
            "booting: cannot read guest image /x: no such file"
        );
    }
}
