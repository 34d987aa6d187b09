//! The PC's CMOS real-time clock, a Motorola MC146818: ports 0x70 (index; bit 7 masks NMIs) and
//! 0x71 (data) over 128 bytes of CMOS.
//!
//! The time registers (seconds .. year, and the century at 0x32) show the host's UTC clock plus
//! an offset, in BCD or binary and 12- or 24-hour form as register B selects. A guest that sets
//! the time (SET bit in B, write the registers, clear SET, as Linux does; or a plain write to one
//! register) moves the offset, never the host clock. Register A's UIP bit is set during the last
//! 244 µs before each second, as on the chip, so readers that wait for it to clear do not spin;
//! register C (interrupt flags) clears on read; register D reports valid RAM. The alarm
//! registers are stored. Everything else is plain CMOS RAM.
//!
//! No interrupt (IRQ 8) is raised: periodic, alarm and update interrupts need a timer the VMM
//! does not have, and Linux's rtc-cmos works without one (it reports "no alarms"). The flags in
//! register C still tell a polling reader that an update happened.
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::memory::RegionOps;

/// CMOS index port (0x70; bit 7 masks NMIs); the data port follows.
pub const RTC_BASE: u16 = 0x70;
/// Ports the RTC decodes.
pub const RTC_SIZE: u16 = 2;

const CMOS_SIZE: usize = 128;
const INDEX_MASK: u8 = 0x7F;

// Register indexes.
const SECONDS: u8 = 0x00;
const SECONDS_ALARM: u8 = 0x01;
const MINUTES: u8 = 0x02;
const MINUTES_ALARM: u8 = 0x03;
const HOURS: u8 = 0x04;
const HOURS_ALARM: u8 = 0x05;
const DAY_OF_WEEK: u8 = 0x06;
const DAY_OF_MONTH: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const REG_A: u8 = 0x0A;
const REG_B: u8 = 0x0B;
const REG_C: u8 = 0x0C;
const REG_D: u8 = 0x0D;
/// Where PC firmware keeps the century (named in the FADT's CENTURY field).
pub const CENTURY: u8 = 0x32;

const A_UIP: u8 = 0x80;
/// 32.768 kHz time base, 1024 Hz periodic rate: what firmware programs.
const A_DEFAULT: u8 = 0x26;
/// Divider bits 6..4 = 11x hold the divider in reset: the clock does not update.
const A_DIVIDER_RESET: u8 = 0x60;
const B_SET: u8 = 0x80;
const B_UIE: u8 = 0x10;
const B_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
const D_VRT: u8 = 0x80;
const HOUR_PM: u8 = 0x80;
/// Alarm registers with the top two bits set match any value ("don't care").
const ALARM_ANY: u8 = 0xC0;
/// The update cycle starts this long before the second ends.
const UIP_NANOS: u32 = 244_000;

/// A broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    /// 1 = Sunday .. 7 = Saturday, as the MC146818 counts.
    weekday: u8,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (eras of 400 years, March-based years
/// so the leap day is the last day of a year).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl DateTime {
    fn from_unix(secs: i64) -> DateTime {
        let days = secs.div_euclid(86_400);
        let rest = secs.rem_euclid(86_400);
        // Inverse of days_from_civil.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u8;
        let month = if month_from_march < 10 {
            month_from_march + 3
        } else {
            month_from_march - 9
        } as u8;
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        DateTime {
            year,
            month,
            day,
            hour: (rest / 3600) as u8,
            minute: (rest / 60 % 60) as u8,
            second: (rest % 60) as u8,
            // 1970-01-01 was a Thursday (5).
            weekday: ((days + 4).rem_euclid(7) + 1) as u8,
        }
    }

    /// Seconds since the epoch, or None if a field is out of range.
    fn to_unix(self) -> Option<i64> {
        let valid = (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= days_in_month(self.year, self.month)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60;
        valid.then(|| {
            days_from_civil(self.year, self.month, self.day) * 86_400
                + i64::from(self.hour) * 3600
                + i64::from(self.minute) * 60
                + i64::from(self.second)
        })
    }
}

fn to_bcd(value: u8) -> u8 {
    (value / 10) << 4 | (value % 10)
}

fn from_bcd(value: u8) -> u8 {
    (value >> 4) * 10 + (value & 0xF)
}

/// Where the guest's clock comes from: the host's UTC clock, or a fixed time in tests.
pub trait WallClock: Send {
    /// Seconds and nanoseconds since the Unix epoch.
    fn now(&self) -> (i64, u32);
}

/// The host's real-time clock.
pub struct HostClock;

impl WallClock for HostClock {
    fn now(&self) -> (i64, u32) {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => (-(e.duration().as_secs() as i64) - 1, 0),
        }
    }
}

struct CmosState {
    ram: [u8; CMOS_SIZE],
    index: u8,
    nmi_masked: bool,
    /// Guest time minus host time, in seconds.
    offset: i64,
    /// While SET is on: the time registers as the guest writes them (in its format).
    frozen: Option<DateTime>,
    /// The guest second at which register C was last read (for the UF/AF flags).
    last_flags_check: i64,
    clock: Box<dyn WallClock>,
}

/// The MC146818 behind ports 0x70/0x71.
pub struct CmosRtc {
    state: Mutex<CmosState>,
}

impl CmosRtc {
    /// An RTC showing the host's time (UTC) until the guest sets its own.
    pub fn new() -> CmosRtc {
        CmosRtc::with_clock(Box::new(HostClock))
    }

    fn with_clock(clock: Box<dyn WallClock>) -> CmosRtc {
        let mut ram = [0u8; CMOS_SIZE];
        ram[REG_A as usize] = A_DEFAULT;
        ram[REG_B as usize] = B_24H;
        ram[REG_D as usize] = D_VRT;
        let now = clock.now().0;
        CmosRtc {
            state: Mutex::new(CmosState {
                ram,
                index: 0,
                nmi_masked: false,
                offset: 0,
                frozen: None,
                last_flags_check: now,
                clock,
            }),
        }
    }

    /// Whether the guest masked NMIs (bit 7 of the last index write).
    pub fn nmi_masked(&self) -> bool {
        self.lock().nmi_masked
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CmosState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for CmosRtc {
    fn default() -> Self {
        CmosRtc::new()
    }
}

impl CmosState {
    fn binary(&self) -> bool {
        self.ram[REG_B as usize] & B_BINARY != 0
    }

    fn hours_24(&self) -> bool {
        self.ram[REG_B as usize] & B_24H != 0
    }

    fn updating(&self) -> bool {
        self.ram[REG_B as usize] & B_SET == 0
            && self.ram[REG_A as usize] & A_DIVIDER_RESET != A_DIVIDER_RESET
    }

    /// The guest's current time, in seconds since the epoch.
    fn guest_secs(&self) -> i64 {
        self.clock.now().0.saturating_add(self.offset)
    }

    fn current(&self) -> DateTime {
        self.frozen
            .unwrap_or_else(|| DateTime::from_unix(self.guest_secs()))
    }

    /// A value in the guest's format (BCD or binary).
    fn encode(&self, value: u8) -> u8 {
        if self.binary() {
            value
        } else {
            to_bcd(value)
        }
    }

    fn decode(&self, value: u8) -> u8 {
        if self.binary() {
            value
        } else {
            from_bcd(value)
        }
    }

    fn encode_hour(&self, hour: u8) -> u8 {
        if self.hours_24() {
            return self.encode(hour);
        }
        let pm = if hour >= 12 { HOUR_PM } else { 0 };
        let twelve = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(twelve) | pm
    }

    fn decode_hour(&self, value: u8) -> u8 {
        if self.hours_24() {
            return self.decode(value);
        }
        let twelve = self.decode(value & !HOUR_PM) % 12;
        if value & HOUR_PM != 0 {
            twelve + 12
        } else {
            twelve
        }
    }

    fn read_time_register(&self, index: u8) -> u8 {
        let now = self.current();
        let century = now.year.div_euclid(100) as u8;
        let year = now.year.rem_euclid(100) as u8;
        match index {
            SECONDS => self.encode(now.second),
            MINUTES => self.encode(now.minute),
            HOURS => self.encode_hour(now.hour),
            DAY_OF_WEEK => self.encode(now.weekday),
            DAY_OF_MONTH => self.encode(now.day),
            MONTH => self.encode(now.month),
            YEAR => self.encode(year),
            _ => self.encode(century),
        }
    }

    /// A write to one time register: changes that field of the guest's time.
    fn write_time_register(&mut self, index: u8, value: u8) {
        let mut time = self.current();
        let field = self.decode(value);
        match index {
            SECONDS => time.second = field,
            MINUTES => time.minute = field,
            HOURS => time.hour = self.decode_hour(value),
            // The weekday follows from the date here (the chip counts it separately): a written
            // weekday is not kept. Linux writes the one the date implies anyway.
            DAY_OF_WEEK => time.weekday = field,
            DAY_OF_MONTH => time.day = field,
            MONTH => time.month = field,
            YEAR => time.year = time.year.div_euclid(100) * 100 + i64::from(field),
            _ => time.year = i64::from(field) * 100 + time.year.rem_euclid(100),
        }
        if self.frozen.is_some() {
            self.frozen = Some(time);
        } else {
            self.set_guest_time(time);
        }
    }

    fn set_guest_time(&mut self, time: DateTime) {
        match time.to_unix() {
            Some(secs) => self.offset = secs - self.clock.now().0,
            // The chip would count on from garbage; we keep the last valid time instead.
            None => log::debug!("rtc: guest set an invalid time {time:?}; ignored"),
        }
    }

    fn alarm_matches(&self, time: &DateTime) -> bool {
        let matches = |index: u8, value: u8| {
            let alarm = self.ram[index as usize];
            alarm & ALARM_ANY == ALARM_ANY || alarm == value
        };
        matches(SECONDS_ALARM, self.encode(time.second))
            && matches(MINUTES_ALARM, self.encode(time.minute))
            && matches(HOURS_ALARM, self.encode_hour(time.hour))
    }

    /// Register C: the update-ended and alarm flags for the seconds that passed since the last
    /// read, then cleared.
    fn read_flags(&mut self) -> u8 {
        let now = self.guest_secs();
        let mut flags = 0;
        if self.updating() && now != self.last_flags_check {
            flags |= C_UF;
            // Look at the seconds that passed (at most a day's worth: the alarm repeats daily).
            let first = now.saturating_sub(86_400).max(self.last_flags_check + 1);
            if (first..=now).any(|s| self.alarm_matches(&DateTime::from_unix(s))) {
                flags |= C_AF;
            }
        }
        self.last_flags_check = now;
        let enabled = self.ram[REG_B as usize] & (flags & (C_UF | C_AF));
        if enabled != 0 {
            flags |= C_IRQF;
        }
        flags
    }

    fn read(&mut self) -> u8 {
        let index = self.index;
        match index {
            SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR | CENTURY => {
                self.read_time_register(index)
            }
            REG_A => {
                let nanos = self.clock.now().1;
                let uip = self.updating() && nanos >= 1_000_000_000 - UIP_NANOS;
                self.ram[REG_A as usize] & !A_UIP | if uip { A_UIP } else { 0 }
            }
            REG_C => self.read_flags(),
            REG_D => D_VRT,
            _ => self.ram[index as usize],
        }
    }

    fn write(&mut self, value: u8) {
        let index = self.index;
        match index {
            SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR | CENTURY => {
                self.write_time_register(index, value)
            }
            REG_A => self.ram[REG_A as usize] = value & !A_UIP,
            REG_B => {
                let was_set = self.ram[REG_B as usize] & B_SET != 0;
                let mut value = value;
                if value & B_SET != 0 {
                    // SET stops updates and, per the data sheet, clears UIE.
                    value &= !B_UIE;
                    if !was_set {
                        self.frozen = Some(self.current());
                    }
                } else if let Some(time) = self.frozen.take() {
                    self.set_guest_time(time);
                    self.last_flags_check = self.guest_secs();
                }
                self.ram[REG_B as usize] = value;
            }
            // Status registers: read-only.
            REG_C | REG_D => {}
            _ => self.ram[index as usize] = value,
        }
    }
}

impl RegionOps for CmosRtc {
    fn read(&self, offset: u64, _size: u32) -> u64 {
        let mut state = self.lock();
        match offset {
            // The index port is write-only on the chip; reading back the last write is harmless.
            0 => u64::from(state.index | if state.nmi_masked { 0x80 } else { 0 }),
            _ => u64::from(state.read()),
        }
    }

    fn write(&self, offset: u64, _size: u32, value: u64) {
        let mut state = self.lock();
        let value = value as u8;
        match offset {
            0 => {
                state.index = value & INDEX_MASK;
                state.nmi_masked = value & 0x80 != 0;
            }
            _ => state.write(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
    use std::sync::Arc;

    /// A clock the test moves by hand.
    #[derive(Clone, Default)]
    struct FakeClock(Arc<(AtomicI64, AtomicU32)>);

    impl FakeClock {
        fn set(&self, secs: i64, nanos: u32) {
            self.0 .0.store(secs, Ordering::SeqCst);
            self.0 .1.store(nanos, Ordering::SeqCst);
        }
    }

    impl WallClock for FakeClock {
        fn now(&self) -> (i64, u32) {
            (
                self.0 .0.load(Ordering::SeqCst),
                self.0 .1.load(Ordering::SeqCst),
            )
        }
    }

    /// 2024-02-29 13:45:07 UTC, a Thursday.
    const LEAP_DAY_AFTERNOON: i64 = 1_709_214_307;

    fn rtc_at(secs: i64) -> (CmosRtc, FakeClock) {
        let clock = FakeClock::default();
        clock.set(secs, 0);
        (CmosRtc::with_clock(Box::new(clock.clone())), clock)
    }

    fn get(rtc: &CmosRtc, index: u8) -> u8 {
        rtc.write(0, 1, u64::from(index));
        rtc.read(1, 1) as u8
    }

    fn set(rtc: &CmosRtc, index: u8, value: u8) {
        rtc.write(0, 1, u64::from(index));
        rtc.write(1, 1, u64::from(value));
    }

    fn time_registers(rtc: &CmosRtc) -> [u8; 8] {
        [
            SECONDS,
            MINUTES,
            HOURS,
            DAY_OF_WEEK,
            DAY_OF_MONTH,
            MONTH,
            YEAR,
            CENTURY,
        ]
        .map(|i| get(rtc, i))
    }

    #[test]
    fn civil_conversions_round_trip() {
        for secs in [0, 951_782_400, LEAP_DAY_AFTERNOON, 4_102_444_799, -86_400] {
            let t = DateTime::from_unix(secs);
            assert_eq!(t.to_unix(), Some(secs), "{t:?}");
        }
        let t = DateTime::from_unix(LEAP_DAY_AFTERNOON);
        assert_eq!((t.year, t.month, t.day), (2024, 2, 29));
        assert_eq!((t.hour, t.minute, t.second, t.weekday), (13, 45, 7, 5));
        let sunday = DateTime::from_unix(3 * 86_400);
        assert_eq!(
            (sunday.day, sunday.weekday),
            (4, 1),
            "1970-01-04 was a Sunday"
        );
        assert_eq!(
            DateTime {
                month: 2,
                day: 29,
                ..DateTime::from_unix(1_677_628_800)
            }
            .to_unix(),
            None,
            "2023 has no Feb 29"
        );
    }

    #[test]
    fn reads_bcd_24h_by_default() {
        let (rtc, _) = rtc_at(LEAP_DAY_AFTERNOON);
        assert_eq!(
            time_registers(&rtc),
            [0x07, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20]
        );
        assert_eq!(get(&rtc, REG_B), B_24H);
    }

    #[test]
    fn reads_binary_and_12h_as_register_b_says() {
        let (rtc, _) = rtc_at(LEAP_DAY_AFTERNOON);
        set(&rtc, REG_B, B_BINARY | B_24H);
        assert_eq!(time_registers(&rtc), [7, 45, 13, 5, 29, 2, 24, 20]);
        set(&rtc, REG_B, B_BINARY);
        assert_eq!(get(&rtc, HOURS), 0x80 | 1, "1 PM, binary");
        set(&rtc, REG_B, 0);
        assert_eq!(get(&rtc, HOURS), 0x80 | 0x01, "1 PM, BCD");
        let (midnight, _) = rtc_at(LEAP_DAY_AFTERNOON - 13 * 3600 - 45 * 60 - 7);
        set(&midnight, REG_B, 0);
        assert_eq!(get(&midnight, HOURS), 0x12, "00:xx is 12 AM");
        let (noon, _) = rtc_at(LEAP_DAY_AFTERNOON - 3600 - 45 * 60 - 7);
        set(&noon, REG_B, 0);
        assert_eq!(get(&noon, HOURS), 0x80 | 0x12, "12:xx is 12 PM");
    }

    #[test]
    fn follows_the_host_clock() {
        let (rtc, clock) = rtc_at(LEAP_DAY_AFTERNOON);
        clock.set(LEAP_DAY_AFTERNOON + 10 * 3600 + 14 * 60 + 53, 0);
        // 2024-03-01 00:00:00, a Friday.
        assert_eq!(
            time_registers(&rtc),
            [0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20]
        );
    }

    #[test]
    fn setting_the_time_keeps_an_offset_from_the_host_clock() {
        let (rtc, clock) = rtc_at(LEAP_DAY_AFTERNOON);
        // As Linux does: SET, write every register (BCD, 24 h), clear SET.
        set(&rtc, REG_B, B_SET | B_24H);
        for (index, value) in [
            (SECONDS, 0x30),
            (MINUTES, 0x59),
            (HOURS, 0x23),
            (DAY_OF_MONTH, 0x31),
            (MONTH, 0x12),
            (YEAR, 0x99),
            (CENTURY, 0x19),
        ] {
            set(&rtc, index, value);
        }
        // Frozen while SET is on, even as the host clock moves.
        clock.set(LEAP_DAY_AFTERNOON + 5, 0);
        assert_eq!(get(&rtc, SECONDS), 0x30);
        set(&rtc, REG_B, B_24H);
        assert_eq!(get(&rtc, SECONDS), 0x30);
        clock.set(LEAP_DAY_AFTERNOON + 5 + 31, 0);
        // 1999-12-31 23:59:30 + 31 s = 2000-01-01 00:00:01, a Saturday.
        assert_eq!(
            time_registers(&rtc),
            [0x01, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]
        );
        // A plain write (no SET) moves the offset at once; 12 h mode decodes PM.
        set(&rtc, REG_B, 0);
        set(&rtc, HOURS, 0x80 | 0x03);
        set(&rtc, REG_B, B_24H);
        assert_eq!(get(&rtc, HOURS), 0x15);
        assert_eq!(get(&rtc, SECONDS), 0x01);
    }

    #[test]
    fn invalid_times_are_ignored() {
        let (rtc, _) = rtc_at(LEAP_DAY_AFTERNOON);
        set(&rtc, REG_B, B_SET | B_24H);
        set(&rtc, MONTH, 0x13);
        set(&rtc, REG_B, B_24H);
        assert_eq!(get(&rtc, MONTH), 0x02);
        set(&rtc, HOURS, 0x99);
        assert_eq!(get(&rtc, HOURS), 0x13);
    }

    #[test]
    fn index_masks_nmi_bit_and_ram_is_plain() {
        let (rtc, _) = rtc_at(LEAP_DAY_AFTERNOON);
        rtc.write(0, 1, 0x80 | 0x40);
        rtc.write(1, 1, 0xAB);
        assert!(rtc.nmi_masked());
        assert_eq!(get(&rtc, 0x40), 0xAB, "0xC0 selected register 0x40");
        rtc.write(0, 1, 0x7F);
        assert!(!rtc.nmi_masked());
        rtc.write(1, 1, 0x5A);
        assert_eq!(get(&rtc, 0x7F), 0x5A);
        for (index, value) in [
            (SECONDS_ALARM, 0x15),
            (MINUTES_ALARM, 0x45),
            (HOURS_ALARM, 0xC0),
        ] {
            set(&rtc, index, value);
            assert_eq!(get(&rtc, index), value, "alarm {index:#x} stored");
        }
    }

    #[test]
    fn status_registers_are_read_only() {
        let (rtc, _) = rtc_at(LEAP_DAY_AFTERNOON);
        set(&rtc, REG_D, 0);
        assert_eq!(get(&rtc, REG_D), D_VRT);
        set(&rtc, REG_C, 0xFF);
        assert_eq!(get(&rtc, REG_C), 0);
        set(&rtc, REG_A, 0xFF);
        assert_eq!(get(&rtc, REG_A) & !A_UIP, 0x7F, "UIP is not writable");
    }

    #[test]
    fn uip_is_set_just_before_the_second_ends() {
        let (rtc, clock) = rtc_at(LEAP_DAY_AFTERNOON);
        assert_eq!(get(&rtc, REG_A), A_DEFAULT);
        clock.set(LEAP_DAY_AFTERNOON, 999_900_000);
        assert_eq!(get(&rtc, REG_A), A_DEFAULT | A_UIP);
        set(&rtc, REG_B, B_SET | B_24H);
        assert_eq!(get(&rtc, REG_A), A_DEFAULT, "no updates while SET");
    }

    #[test]
    fn register_c_reports_updates_and_alarms_then_clears() {
        let (rtc, clock) = rtc_at(LEAP_DAY_AFTERNOON);
        assert_eq!(get(&rtc, REG_C), 0, "no second passed");
        // Alarm at 13:45:09 (BCD).
        set(&rtc, SECONDS_ALARM, 0x09);
        set(&rtc, MINUTES_ALARM, 0x45);
        set(&rtc, HOURS_ALARM, ALARM_ANY);
        clock.set(LEAP_DAY_AFTERNOON + 1, 0);
        assert_eq!(get(&rtc, REG_C), C_UF);
        assert_eq!(get(&rtc, REG_C), 0, "cleared by the read");
        clock.set(LEAP_DAY_AFTERNOON + 3, 0);
        assert_eq!(get(&rtc, REG_C), C_UF | C_AF, "13:45:09 passed");
        set(&rtc, REG_B, B_24H | B_UIE);
        clock.set(LEAP_DAY_AFTERNOON + 4, 0);
        assert_eq!(get(&rtc, REG_C), C_IRQF | C_UF, "IRQF when enabled");
    }
}
