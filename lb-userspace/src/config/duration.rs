//! Go `time.ParseDuration`, the format of `metav1.Duration` fields (`90s`, `1m30s`, `1.5h`).

use std::time::Duration;

/// Parses a Go duration string. Negative durations are refused (no BGP timer is negative).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (expected e.g. 90s, 1m30s, 500ms)");
    // One optional sign, as in Go.
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if body.starts_with(['+', '-']) {
        return Err(bad());
    }
    if negative {
        // Go accepts a negative zero ("-0", "-0s"); any other negative value is refused.
        return match parse_go_duration(body) {
            Ok(d) if d.is_zero() => Ok(Duration::ZERO),
            Ok(_) => Err(format!("invalid duration {text:?}: must not be negative")),
            Err(_) => Err(bad()),
        };
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(bad());
    }
    let mut rest = body;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        total_ns = total_ns
            .checked_add(whole.checked_mul(unit_ns).ok_or_else(bad)?)
            .and_then(|t| t.checked_add(fraction_ns(fraction, unit_ns)))
            .ok_or_else(bad)?;
        rest = after;
    }
    // Go's limit: an int64 of nanoseconds.
    if total_ns > i64::MAX as u128 {
        return Err(format!("invalid duration {text:?}: too large"));
    }
    Ok(Duration::from_nanos(total_ns as u64))
}

/// The nanoseconds of a fraction's digits in `unit_ns`, as Go computes them: digits are taken
/// while their value stays within 2^63 (the rest are ignored), then scaled in floating point.
fn fraction_ns(digits: &str, unit_ns: u128) -> u128 {
    const LIMIT: u64 = 1 << 63;
    let mut value: u64 = 0;
    let mut scale: f64 = 1.0;
    for digit in digits.bytes() {
        let next = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(digit - b'0')))
            .filter(|v| *v <= LIMIT && value <= (LIMIT - 1) / 10);
        match next {
            Some(v) => {
                value = v;
                scale *= 10.0;
            }
            None => break,
        }
    }
    // At most 2^63 × 3.6e12 / 1: far below u128::MAX, and never negative.
    (value as f64 * (unit_ns as f64 / scale)) as u128
}

/// Go's `time.Duration.String()` (`0s`, `1.5s`, `2m0s`, `1h0m0s`, `500ms`), the form
/// `metav1.Duration` fields are written in.
pub fn format_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    // Below one second Go switches to the largest unit that keeps a non-zero integer part.
    let fraction = |value: u128, scale: u128, unit: &str| {
        let whole = value / scale;
        let rest = value % scale;
        if rest == 0 {
            return format!("{whole}{unit}");
        }
        let width = scale.ilog10() as usize;
        let digits = format!("{rest:0width$}");
        format!("{whole}.{}{unit}", digits.trim_end_matches('0'))
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return fraction(nanos, 1_000, "µs");
    }
    if nanos < 1_000_000_000 {
        return fraction(nanos, 1_000_000, "ms");
    }
    let secs = nanos / 1_000_000_000;
    let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000, "s");
    let (hours, minutes) = (secs / 3600, secs / 60 % 60);
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_table() {
        let ok = [
            ("90s", 90_000),
            ("1m30s", 90_000),
            ("1.5h", 5_400_000),
            ("500ms", 500),
            ("0", 0),
            ("0s", 0),
            ("2h45m", 9_900_000),
            (".5s", 500),
            ("-0", 0),
            ("-0s", 0),
            ("+90s", 90_000),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_go_duration(text).map(|d| d.as_millis()),
                Ok(ms),
                "{text}"
            );
        }
        // Fractions past what Go keeps, with Go's own results (go1.26 time.ParseDuration).
        let go_nanos = [
            ("0.99999999999999999999999999h", 3_600_000_000_000),
            ("0.999999999999999999999999999999s", 1_000_000_000),
            ("1.0000000001s", 1_000_000_000),
            (".3333333333333333333333m", 20_000_000_000),
            ("1.123456789123456789123h", 4_044_444_440_844),
            ("2562047h47m16.854775807s", 9_223_372_036_854_775_807),
            ("0.9223372036854775808s", 922_337_203),
            ("0.92233720368547758089s", 922_337_203),
        ];
        for (text, nanos) in go_nanos {
            assert_eq!(
                parse_go_duration(text).map(|d| d.as_nanos()),
                Ok(nanos),
                "{text}"
            );
        }
        for bad in [
            "",
            "90",
            "2562047h47m16.854775808s",
            "s",
            "1x",
            "1..5s",
            "-5s",
            "-0x",
            "--0",
            "+-0",
            "-+0",
            "1h-3m",
            "9999999999h",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(120), "2m0s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(3661), "1h1m1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_nanos(7), "7ns"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_go_duration(duration), text);
            assert_eq!(parse_go_duration(text), Ok(duration), "{text} parses back");
        }
    }
}
