//! The transport against a fake backend: identity and capabilities, feature windows, queue
//! programming, DRIVER_OK, reset, and what bad driver input does.

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK, VIRTIO_CONFIG_S_DRIVER as DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET as NEEDS_RESET,
};

use super::capabilities::{cfg_type, CAP_ID_VENDOR};
use super::common::reg;
use super::*;
use crate::interrupts::fake::FakeIrqBackend;

const VERSION_1: u64 = 1 << 32;
const FEATURES: u64 = VERSION_1 | 0b110;

/// (index, size, desc, driver, device) of one activated queue.
type QueueSeen = (u16, u16, u64, u64, u64);

#[derive(Default)]
struct Record {
    activations: Vec<(u64, Vec<QueueSeen>)>,
    resets: usize,
    config_writes: Vec<(u64, Vec<u8>)>,
    fail_activation: bool,
}

struct FakeBackend(Arc<Mutex<Record>>);

impl VirtioBackend for FakeBackend {
    fn device_features(&self) -> u64 {
        FEATURES
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = [0x11u8, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = config.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .config_writes
            .push((offset, data.to_vec()));
    }
    fn activate(&mut self, activation: Activation) -> anyhow::Result<()> {
        let mut record = self.0.lock().unwrap();
        if record.fail_activation {
            anyhow::bail!("backend refused");
        }
        let queues = activation
            .queues
            .iter()
            .map(|q| (q.index, q.size, q.desc, q.driver, q.device))
            .collect();
        record.activations.push((activation.features, queues));
        Ok(())
    }
    fn reset(&mut self) {
        self.0.lock().unwrap().resets += 1;
    }
}

fn device(queues: usize) -> (PciFunction, Arc<VirtioPci>, Arc<Mutex<Record>>) {
    let record = Arc::new(Mutex::new(Record::default()));
    let config = VirtioPciConfig {
        name: "test-virtio".into(),
        virtio_id: 2,
        class_code: 0x018000,
        queue_max_sizes: vec![256; queues],
        device_config_len: 8,
        msix_vectors: None,
    };
    let (function, device) = VirtioPci::create(
        config,
        Box::new(FakeBackend(record.clone())),
        InterruptRouter::new(FakeIrqBackend::new()),
    )
    .unwrap();
    (function, device, record)
}

fn common_read(d: &VirtioPci, offset: u64, size: u32) -> u64 {
    d.read(Part::Common, offset, size)
}
fn common_write(d: &VirtioPci, offset: u64, size: u32, value: u64) {
    d.write(Part::Common, offset, size, value)
}
fn status(d: &VirtioPci) -> u32 {
    common_read(d, reg::DEVICE_STATUS, 1) as u32
}
fn set_status(d: &VirtioPci, value: u32) {
    common_write(d, reg::DEVICE_STATUS, 1, value as u64)
}

/// What Linux's virtio_pci_modern does up to FEATURES_OK.
fn negotiate(d: &VirtioPci, features: u64) {
    set_status(d, 0);
    set_status(d, ACK);
    set_status(d, ACK | DRIVER);
    common_write(d, reg::DRIVER_FEATURE_SELECT, 4, 0);
    common_write(d, reg::DRIVER_FEATURE, 4, features & 0xFFFF_FFFF);
    common_write(d, reg::DRIVER_FEATURE_SELECT, 4, 1);
    common_write(d, reg::DRIVER_FEATURE, 4, features >> 32);
    set_status(d, ACK | DRIVER | FEATURES_OK);
}

fn program_queue(d: &VirtioPci, index: u16, size: u16, vector: u16, base: u64) {
    common_write(d, reg::QUEUE_SELECT, 2, index as u64);
    common_write(d, reg::QUEUE_SIZE, 2, size as u64);
    common_write(d, reg::QUEUE_MSIX_VECTOR, 2, vector as u64);
    for (offset, value) in [
        (reg::QUEUE_DESC, base),
        (reg::QUEUE_DRIVER, base + 0x1000),
        (reg::QUEUE_DEVICE, base + 0x2000),
    ] {
        common_write(d, offset, 4, value & 0xFFFF_FFFF);
        common_write(d, offset + 4, 4, value >> 32);
    }
    common_write(d, reg::QUEUE_ENABLE, 2, 1);
}

#[test]
fn identity_bar_and_capabilities() {
    let (function, _, _) = device(2);
    let config = function.config();
    assert_eq!(config.word(0x00), 0x1AF4);
    assert_eq!(config.word(0x02), 0x1042, "0x1040 + virtio id 2");
    assert_eq!(config.byte(0x08), 1, "revision 1: modern only");
    assert_eq!(config.dword(0x08) >> 8, 0x018000);
    assert_eq!((config.word(0x2C), config.word(0x2E)), (0x1AF4, 0x1100));
    assert_eq!(config.byte(0x3D), 0, "no INTx pin");
    // BAR4: 64-bit prefetchable memory.
    assert_eq!(config.dword(0x10 + 4 * 4) & 0xF, 0b1100);
    // Walk the capability list: MSI-X plus the four vendor capabilities, all on BAR4.
    let mut vendor = Vec::new();
    let mut msix = 0;
    let mut cap = config.byte(0x34) as usize;
    while cap != 0 {
        match config.byte(cap) {
            CAP_ID_VENDOR => {
                let kind = config.byte(cap + 3);
                assert_eq!(config.byte(cap + 4), 4, "structures live in BAR4");
                if kind == cfg_type::NOTIFY {
                    assert_eq!(config.byte(cap + 2), 20);
                    assert_eq!(config.dword(cap + 16), NOTIFY_OFF_MULTIPLIER);
                }
                vendor.push((kind, config.dword(cap + 8)));
            }
            0x11 => msix += 1,
            other => panic!("unexpected capability {other:#x}"),
        }
        cap = config.byte(cap + 1) as usize;
    }
    vendor.sort();
    assert_eq!(
        vendor,
        vec![
            (cfg_type::COMMON, 0x0000),
            (cfg_type::NOTIFY, 0x3000),
            (cfg_type::ISR, 0x1000),
            (cfg_type::DEVICE, 0x2000),
        ]
    );
    assert_eq!(msix, 1);
    assert_eq!(
        function.msix().unwrap().vector_count(),
        3,
        "a vector per queue + config"
    );
}

#[test]
fn feature_windows_and_features_ok() {
    let (_, d, _) = device(1);
    common_write(&d, reg::DEVICE_FEATURE_SELECT, 4, 0);
    assert_eq!(
        common_read(&d, reg::DEVICE_FEATURE, 4),
        FEATURES & 0xFFFF_FFFF
    );
    common_write(&d, reg::DEVICE_FEATURE_SELECT, 4, 1);
    assert_eq!(common_read(&d, reg::DEVICE_FEATURE, 4), FEATURES >> 32);
    common_write(&d, reg::DEVICE_FEATURE_SELECT, 4, 2);
    assert_eq!(common_read(&d, reg::DEVICE_FEATURE, 4), 0);
    assert_eq!(common_read(&d, reg::NUM_QUEUES, 2), 1);

    // Without VERSION_1, FEATURES_OK does not stick.
    negotiate(&d, 0b110);
    assert_eq!(status(&d), ACK | DRIVER);
    // A feature the device never offered: refused too.
    negotiate(&d, VERSION_1 | 1 << 20);
    assert_eq!(status(&d), ACK | DRIVER);
    // A subset of what is offered, with VERSION_1: accepted, and readable back.
    negotiate(&d, VERSION_1 | 0b100);
    assert_eq!(status(&d), ACK | DRIVER | FEATURES_OK);
    common_write(&d, reg::DRIVER_FEATURE_SELECT, 4, 1);
    assert_eq!(common_read(&d, reg::DRIVER_FEATURE, 4), 1);
    // DRIVER_OK without FEATURES_OK never starts the device.
    set_status(&d, 0);
    set_status(&d, ACK | DRIVER | DRIVER_OK);
    assert_eq!(status(&d) & DRIVER_OK, 0);
}

#[test]
fn queue_programming_reaches_the_backend_at_driver_ok() {
    let (_, d, record) = device(2);
    negotiate(&d, FEATURES);
    // Reads of an unknown queue: size 0.
    common_write(&d, reg::QUEUE_SELECT, 2, 5);
    assert_eq!(common_read(&d, reg::QUEUE_SIZE, 2), 0);
    common_write(&d, reg::QUEUE_SELECT, 2, 0);
    assert_eq!(
        common_read(&d, reg::QUEUE_SIZE, 2),
        256,
        "max size by default"
    );
    assert_eq!(common_read(&d, reg::QUEUE_NOTIFY_OFF, 2), 0);
    program_queue(&d, 0, 128, 1, 0x10_0000);
    program_queue(&d, 1, 64, 2, 0x1_2000_0000);
    common_write(&d, reg::MSIX_CONFIG, 2, 0);
    assert_eq!(common_read(&d, reg::MSIX_CONFIG, 2), 0);
    common_write(&d, reg::QUEUE_SELECT, 2, 1);
    assert_eq!(common_read(&d, reg::QUEUE_NOTIFY_OFF, 2), 1);
    assert_eq!(common_read(&d, reg::QUEUE_DESC, 8), 0x1_2000_0000);
    assert!(record.lock().unwrap().activations.is_empty());
    set_status(&d, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(status(&d), ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    let record = record.lock().unwrap();
    assert_eq!(
        record.activations,
        vec![(
            FEATURES,
            vec![
                (0, 128, 0x10_0000, 0x10_1000, 0x10_2000),
                (1, 64, 0x1_2000_0000, 0x1_2000_1000, 0x1_2000_2000)
            ]
        )]
    );
}

/// A backend that keeps the activation the transport hands it (queues, call and kick fds).
struct Capture(Arc<Mutex<Option<Activation>>>);

impl VirtioBackend for Capture {
    fn device_features(&self) -> u64 {
        VERSION_1
    }
    fn read_config(&self, _: u64, _: &mut [u8]) {}
    fn write_config(&mut self, _: u64, _: &[u8]) {}
    fn activate(&mut self, a: Activation) -> anyhow::Result<()> {
        *self.0.lock().unwrap() = Some(a);
        Ok(())
    }
    fn reset(&mut self) {}
}

#[test]
fn queues_get_their_vector_eventfd_as_call_and_notify_kicks() {
    let record = Arc::new(Mutex::new(None));
    let config = VirtioPciConfig {
        name: "capture".into(),
        virtio_id: 26,
        class_code: 0x018000,
        queue_max_sizes: vec![256, 256],
        device_config_len: 0,
        msix_vectors: None,
    };
    let (_, d) = VirtioPci::create(
        config,
        Box::new(Capture(record.clone())),
        InterruptRouter::new(FakeIrqBackend::new()),
    )
    .unwrap();
    negotiate(&d, VERSION_1);
    program_queue(&d, 0, 256, 2, 0x10_0000);
    program_queue(&d, 1, 256, NO_VECTOR, 0x20_0000);
    set_status(&d, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    let activation = record.lock().unwrap().take().unwrap();
    let q0 = &activation.queues[0];
    assert!(Arc::ptr_eq(&q0.call, d.vector_fd(2).unwrap()));
    assert!(Arc::ptr_eq(&q0.kick, d.kick_fd(0).unwrap()));
    let q1 = &activation.queues[1];
    assert!(d.vector_fds.iter().all(|fd| !Arc::ptr_eq(fd, &q1.call)));
    // A notify write that reaches the VMM (no ioeventfd here) still kicks the right queue.
    d.write(Part::Notify, 4, 2, 1);
    assert_eq!(d.kick_fd(1).unwrap().read().unwrap(), 1);
    assert!(
        d.kick_fd(0).unwrap().read().is_err(),
        "queue 0 was not kicked"
    );
}

#[test]
fn fewer_vectors_than_queues_share_one_call_eventfd() {
    // vsock's layout (QEMU's vhost-user-vsock-pci): 3 queues, 2 vectors; Linux puts its
    // configuration changes on vector 0 and every queue on vector 1.
    let config = |vectors| VirtioPciConfig {
        name: "shared".into(),
        virtio_id: 19,
        class_code: 0x078000,
        queue_max_sizes: vec![128; 3],
        device_config_len: 8,
        msix_vectors: vectors,
    };
    let record = Arc::new(Mutex::new(None));
    let (_, d) = VirtioPci::create(
        config(Some(2)),
        Box::new(Capture(record.clone())),
        InterruptRouter::new(FakeIrqBackend::new()),
    )
    .unwrap();
    assert_eq!(d.msix().vector_count(), 2);
    negotiate(&d, VERSION_1);
    // Vector 2 is past the table: read back as NO_VECTOR.
    common_write(&d, reg::QUEUE_SELECT, 2, 0);
    common_write(&d, reg::QUEUE_MSIX_VECTOR, 2, 2);
    assert_eq!(common_read(&d, reg::QUEUE_MSIX_VECTOR, 2), NO_VECTOR as u64);
    for queue in 0..3 {
        program_queue(&d, queue, 128, 1, 0x10_0000 * (u64::from(queue) + 1));
    }
    set_status(&d, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    let activation = record.lock().unwrap().take().unwrap();
    assert_eq!(activation.queues.len(), 3);
    for q in &activation.queues {
        assert!(
            Arc::ptr_eq(&q.call, d.vector_fd(1).unwrap()),
            "queue {}",
            q.index
        );
    }
    // Fewer than 2 (no vector left for the queues) or more than MSI-X allows: refused.
    for bad in [0, 1, MAX_MSIX_VECTORS + 1] {
        let error = VirtioPci::create(
            config(Some(bad)),
            Box::new(Capture(Arc::new(Mutex::new(None)))),
            InterruptRouter::new(FakeIrqBackend::new()),
        )
        .err()
        .unwrap_or_else(|| panic!("{bad} vectors accepted"));
        assert!(error.to_string().contains("MSI-X vectors"), "{error}");
    }
}

#[test]
fn bad_queue_sizes_are_refused_and_live_queues_are_frozen() {
    let (_, d, record) = device(1);
    negotiate(&d, FEATURES);
    common_write(&d, reg::QUEUE_SELECT, 2, 0);
    for bad in [0u64, 100, 512] {
        common_write(&d, reg::QUEUE_SIZE, 2, bad);
        assert_eq!(
            common_read(&d, reg::QUEUE_SIZE, 2),
            256,
            "size {bad} refused"
        );
    }
    common_write(&d, reg::QUEUE_SIZE, 2, 16);
    assert_eq!(common_read(&d, reg::QUEUE_SIZE, 2), 16);
    // A vector beyond the table reads back as NO_VECTOR.
    common_write(&d, reg::QUEUE_MSIX_VECTOR, 2, 7);
    assert_eq!(common_read(&d, reg::QUEUE_MSIX_VECTOR, 2), NO_VECTOR as u64);
    common_write(&d, reg::QUEUE_ENABLE, 2, 1);
    // Enabled: further writes are ignored.
    common_write(&d, reg::QUEUE_SIZE, 2, 32);
    common_write(&d, reg::QUEUE_DESC, 4, 0x5000);
    assert_eq!(common_read(&d, reg::QUEUE_SIZE, 2), 16);
    assert_eq!(common_read(&d, reg::QUEUE_DESC, 4), 0);
    // Partial writes of a register are ignored, never half-applied.
    common_write(&d, reg::QUEUE_SELECT, 1, 3);
    assert_eq!(common_read(&d, reg::QUEUE_SELECT, 2), 0);
    set_status(&d, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(record.lock().unwrap().activations.len(), 1);
}

#[test]
fn misaligned_rings_set_needs_reset_and_raise_the_config_vector() {
    let (function, d, record) = device(1);
    negotiate(&d, FEATURES);
    common_write(&d, reg::MSIX_CONFIG, 2, 0);
    program_queue(&d, 0, 256, 1, 0x10_0008); // descriptors must be 16-aligned
    set_status(&d, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert!(record.lock().unwrap().activations.is_empty());
    assert_eq!(status(&d) & NEEDS_RESET, NEEDS_RESET);
    // MSI-X is off in this test, so the config vector's signal is dropped; the ISR says why.
    assert_eq!(d.read(Part::Isr, 0, 1), ISR_CONFIG as u64);
    assert_eq!(d.read(Part::Isr, 0, 1), 0, "read-to-clear");
    // The driver cannot clear NEEDS_RESET by writing status, only by resetting.
    set_status(&d, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(status(&d) & NEEDS_RESET, NEEDS_RESET);
    set_status(&d, 0);
    assert_eq!(status(&d), 0);
    drop(function);
}

#[test]
fn a_failing_backend_sets_needs_reset_and_reset_recovers() {
    let (_, d, record) = device(1);
    record.lock().unwrap().fail_activation = true;
    negotiate(&d, FEATURES);
    program_queue(&d, 0, 256, 1, 0x10_0000);
    let generation = common_read(&d, reg::CONFIG_GENERATION, 1);
    set_status(&d, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(status(&d) & NEEDS_RESET, NEEDS_RESET);
    assert_ne!(common_read(&d, reg::CONFIG_GENERATION, 1), generation);
    // Reset: the backend is told, every register is back to its power-on value.
    record.lock().unwrap().fail_activation = false;
    set_status(&d, 0);
    assert_eq!(
        record.lock().unwrap().resets,
        2,
        "negotiate() resets once, then us"
    );
    common_write(&d, reg::QUEUE_SELECT, 2, 0);
    assert_eq!(common_read(&d, reg::QUEUE_SIZE, 2), 256);
    assert_eq!(common_read(&d, reg::QUEUE_ENABLE, 2), 0);
    assert_eq!(common_read(&d, reg::QUEUE_DESC, 4), 0);
    assert_eq!(common_read(&d, reg::MSIX_CONFIG, 2), NO_VECTOR as u64);
    // A second session works.
    negotiate(&d, FEATURES);
    program_queue(&d, 0, 256, 1, 0x10_0000);
    set_status(&d, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(status(&d) & NEEDS_RESET, 0);
    assert_eq!(record.lock().unwrap().activations.len(), 1);
}

#[test]
fn device_failed_is_reported_once_per_session() {
    let (_, d, _) = device(1);
    negotiate(&d, FEATURES);
    program_queue(&d, 0, 256, 1, 0x10_0000);
    set_status(&d, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    let generation = common_read(&d, reg::CONFIG_GENERATION, 1);
    d.device_failed("backend went away");
    d.device_failed("backend went away");
    assert_eq!(status(&d) & NEEDS_RESET, NEEDS_RESET);
    assert_eq!(
        common_read(&d, reg::CONFIG_GENERATION, 1),
        (generation + 1) & 0xFF
    );
}

#[test]
fn device_config_goes_to_the_backend() {
    let (_, d, record) = device(1);
    assert_eq!(d.read(Part::Device, 0, 4), 0x4433_2211);
    assert_eq!(d.read(Part::Device, 6, 4), 0x8877);
    assert_eq!(d.read(Part::Device, 0, 8), 0x8877_6655_4433_2211);
    d.write(Part::Device, 2, 1, 0xAB);
    assert_eq!(record.lock().unwrap().config_writes, vec![(2, vec![0xAB])]);
}

#[test]
fn a_failure_is_reported_while_a_vcpu_waits_on_the_backend() {
    use std::sync::mpsc;
    struct Stuck(Mutex<mpsc::Receiver<()>>);
    impl VirtioBackend for Stuck {
        fn device_features(&self) -> u64 {
            VERSION_1
        }
        fn read_config(&self, _: u64, _: &mut [u8]) {}
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn activate(&mut self, _: Activation) -> anyhow::Result<()> {
            // A backend that takes its time answering (until the test lets it go).
            let _ = self.0.lock().unwrap().recv();
            Ok(())
        }
        fn reset(&mut self) {}
    }
    let (release, wait) = mpsc::channel();
    let config = VirtioPciConfig {
        name: "stuck".into(),
        virtio_id: 2,
        class_code: 0,
        queue_max_sizes: vec![16],
        device_config_len: 0,
        msix_vectors: None,
    };
    let (_, d) = VirtioPci::create(
        config,
        Box::new(Stuck(Mutex::new(wait))),
        InterruptRouter::new(FakeIrqBackend::new()),
    )
    .unwrap();
    negotiate(&d, VERSION_1);
    program_queue(&d, 0, 16, 1, 0x10_0000);
    let vcpu = {
        let d = d.clone();
        std::thread::spawn(move || set_status(&d, ACK | DRIVER | FEATURES_OK | DRIVER_OK))
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    // The watcher's report does not wait for the vCPU's request.
    d.device_failed("backend closed the connection");
    assert_eq!(d.read(Part::Isr, 0, 1), ISR_CONFIG as u64);
    release.send(()).unwrap();
    vcpu.join().unwrap();
    assert_eq!(status(&d) & NEEDS_RESET, NEEDS_RESET);
}

/// A guest writing anything anywhere: a long pseudo-random run of accesses of every size to the
/// four structures (seeded, so a failure replays). Nothing panics, and what the driver reads
/// back stays within the rules: queue sizes are powers of two up to the maximum, vector
/// numbers exist or are NO_VECTOR, FEATURES_OK only with VERSION_1 and offered features.
#[test]
fn random_guest_accesses_keep_the_registers_sane() {
    let (_, d, record) = device(3);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..20_000 {
        let r = next();
        let part = [Part::Common, Part::Isr, Part::Device, Part::Notify][(r % 4) as usize];
        let size = [1u32, 2, 4, 8][((r >> 2) % 4) as usize];
        // Mostly inside the structures, sometimes anywhere in the page.
        let offset = if r & 0x300 == 0 {
            (r >> 16) % 0x1000
        } else {
            (r >> 16) % 0x40
        };
        let value = next();
        // Every so often a whole well-formed session, so random accesses also hit live queues,
        // and well-formed status writes.
        if round % 997 == 0 {
            negotiate(&d, FEATURES);
            program_queue(&d, 0, 16, 1, 0x10_0000);
            set_status(&d, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        } else if round % 97 == 0 {
            let status = [0, ACK, ACK | DRIVER, ACK | DRIVER | FEATURES_OK, 0x0F][(r % 5) as usize];
            set_status(&d, status);
        } else if r & 0x1000 != 0 {
            d.write(part, offset, size, value);
        } else {
            d.read(part, offset, size);
        }
        if round % 101 == 0 {
            let status = status(&d);
            if status & FEATURES_OK != 0 {
                common_write(&d, reg::DRIVER_FEATURE_SELECT, 4, 1);
                let high = common_read(&d, reg::DRIVER_FEATURE, 4);
                common_write(&d, reg::DRIVER_FEATURE_SELECT, 4, 0);
                let low = common_read(&d, reg::DRIVER_FEATURE, 4);
                let features = high << 32 | low;
                assert_eq!(features & !FEATURES, 0, "round {round}: {features:#x}");
                assert_ne!(features & VERSION_1, 0, "round {round}");
            }
            for queue in 0..4u64 {
                common_write(&d, reg::QUEUE_SELECT, 2, queue);
                let size = common_read(&d, reg::QUEUE_SIZE, 2);
                let vector = common_read(&d, reg::QUEUE_MSIX_VECTOR, 2);
                if queue < 3 {
                    assert!(
                        size.is_power_of_two() && size <= 256,
                        "round {round}: {size}"
                    );
                    assert!(vector < 4 || vector == NO_VECTOR as u64, "round {round}");
                } else {
                    assert_eq!(size, 0, "queue 3 does not exist");
                }
            }
        }
    }
    // Sessions did start along the way (the run is not all refusals).
    let record = record.lock().unwrap();
    assert!(
        !record.activations.is_empty(),
        "no session reached DRIVER_OK"
    );
}
