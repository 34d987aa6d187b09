//! `vhost-bridge`: serves a virtio device over ivshmem with an ordinary vhost-user backend.
//!
//! It joins the ivshmem server as a peer, publishes a virtio-over-ivshmem header in the shared
//! memory, and does the control plane only: feature negotiation, ring set-up at DRIVER_OK,
//! reset when the driver leaves, reconnecting a restarted backend. The data path (kicks, calls,
//! buffers) goes between the driver peer and the backend without passing through it.

mod backend;
mod bridge;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Serve a virtio device over ivshmem with a vhost-user backend"
)]
struct Args {
    /// The ivshmem server's socket.
    #[arg(short = 'S', long, default_value = peer::DEFAULT_SOCKET_PATH)]
    socket: PathBuf,
    /// The vhost-user backend's socket (the backend listens, we connect).
    #[arg(short, long)]
    backend: PathBuf,
    /// Virtio device type: a name (entropy, echo) or a virtio device id.
    #[arg(short = 't', long, value_parser = parse_device)]
    device: u32,
    /// Offset of the device's header in the shared memory (4 KiB aligned).
    #[arg(long, default_value_t = 0, value_parser = parse_u64)]
    header: u64,
    /// Queue count for a backend that cannot report it (no MQ protocol feature), or a limit.
    #[arg(long)]
    queues: Option<u32>,
    /// Largest queue size offered to the driver (power of two). The default, 128, is what
    /// QEMU's vhost-user devices use and stock backends accept. Above a backend's own maximum
    /// (vhost-device-console 0.1: 128) a driver that takes the offered size fails: the backend
    /// refuses SET_VRING_NUM (logged here as "the backend refused vhost-user SET_VRING_NUM"
    /// when it acknowledges messages, REPLY_ACK; most backends then also close the
    /// connection) and the driver's DRIVER_OK is refused with BackendFailed.
    #[arg(long, default_value_t = 128)]
    queue_size: u32,
    /// Bytes of device configuration space to fetch from the backend, if it offers GET_CONFIG.
    #[arg(long, default_value_t = 0)]
    config_size: u32,
    /// Seconds to wait for the server and, at start, for the backend.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Milliseconds a live device waits for a lost backend to come back (it is reconnected
    /// and handed the rings again) before the device is flagged DEVICE_NEEDS_RESET, so the
    /// driver gets an error instead of waiting on.
    #[arg(long, default_value_t = 3000)]
    backend_grace_ms: u64,
}

fn parse_device(s: &str) -> Result<u32, String> {
    match s {
        "entropy" | "rng" => Ok(virtio_ivshmem::device_id::ENTROPY),
        "echo" => Ok(virtio_ivshmem::device_id::ECHO),
        _ => parse_u64(s)
            .ok()
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| v != 0)
            .ok_or_else(|| {
                format!("unknown device type {s:?}: entropy, echo or a virtio device id")
            }),
    }
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?}: {e}"))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let config = bridge::Config {
        socket: args.socket,
        backend: args.backend,
        header: args.header,
        device_id: args.device,
        queues: args.queues,
        queue_size: args.queue_size,
        config_size: args
            .config_size
            .min(virtio_ivshmem::layout::field::CONFIG_MAX as u32),
        timeout: Duration::from_secs(args.timeout),
        backend_grace: Duration::from_millis(args.backend_grace_ms),
    };
    let result = bridge::Bridge::new(config).and_then(|mut b| b.run());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(2)
        }
    }
}
