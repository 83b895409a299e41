//! Numbers as people read them and the flags accept them: fuel as `8.15G`, durations as `222µs`, sizes as `64 MiB`.

use std::time::Duration;

/// A count with a `k`, `M` or `G` suffix and at most three significant
/// digits: `8150000000` is `8.15G`, `5000000` is `5M`, `999` stays `999`.
pub fn count(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")];
    for (scale, suffix) in UNITS {
        if n >= scale {
            let value = n as f64 / scale as f64;
            let decimals = match value {
                v if v >= 100.0 => 0,
                v if v >= 10.0 => 1,
                _ => 2,
            };
            let text = format!("{value:.decimals$}");
            let text = if text.contains('.') {
                text.trim_end_matches('0').trim_end_matches('.')
            } else {
                &text
            };
            return format!("{text}{suffix}");
        }
    }
    n.to_string()
}

/// A duration in the form `--timeout` accepts, rounded to three
/// significant digits: `222µs`, `12ms 300µs`, `1s 520ms`, `2m 5s`.
pub fn duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let nanos = d.as_nanos();
    // Keep three significant digits: drop the precision below them.
    let digits = nanos.to_string().len() as u32;
    let unit = 10u128.pow(digits.saturating_sub(3));
    let rounded = (nanos + unit / 2) / unit * unit;
    let d = Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX));
    humantime::format_duration(d).to_string()
}

/// A byte size such as `64 MiB`.
pub fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_like_the_flags() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(5_000_000), "5M");
        assert_eq!(count(8_150_000_000), "8.15G");
        assert_eq!(count(10_000_000_000), "10G");
        assert_eq!(count(123_456_789), "123M");
        assert_eq!(count(1_500), "1.5k");
    }

    #[test]
    fn durations_read_like_the_flags() {
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_micros(222)), "222us");
        assert_eq!(duration(Duration::from_nanos(222_400)), "222us");
        assert_eq!(duration(Duration::from_millis(1520)), "1s 520ms");
        assert_eq!(duration(Duration::from_secs(125)), "2m 5s");
        // Every rendering parses back.
        for d in [222_400u64, 12_345_678, 1_523_456_789] {
            let text = duration(Duration::from_nanos(d));
            assert!(humantime::parse_duration(&text).is_ok(), "{text}");
        }
    }
}
