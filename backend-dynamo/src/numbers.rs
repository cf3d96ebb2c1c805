//! DynamoDB numbers are decimals (up to 38 significant digits, written
//! by other clients as `10`, `10.0`, `1E+1` or `14.4`). Only exact integers
//! within i64 are counter values; anything else is an error, never a
//! truncation.

/// The exact i64 a DynamoDB number string stands for, or `None` when it is
/// not an integer or lies outside the i64 range.
pub(crate) fn exact_i64(text: &str) -> Option<i64> {
    if let Ok(value) = text.parse::<i64>() {
        return Some(value);
    }
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // digits * 10^scale, with the fraction's digits folded into the scale.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let mut scale = i64::from(exponent) - fraction.len() as i64;
    let mut digits = digits.to_string();
    while scale < 0 {
        // Dropping a trailing zero keeps the value exact; any other digit is a fraction.
        match digits.strip_suffix('0') {
            Some(rest) => digits = rest.to_string(),
            None if digits.is_empty() => break,
            None => return None,
        }
        scale += 1;
    }
    if digits.is_empty() {
        return Some(0);
    }
    if scale > 19 || digits.len() > 19 {
        return None;
    }
    let mut value: i128 = digits.parse().ok()?;
    for _ in 0..scale.max(0) {
        value = value.checked_mul(10)?;
    }
    if negative {
        value = -value;
    }
    i64::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::exact_i64;

    #[test]
    fn integers_in_any_spelling_are_read_exactly() {
        for (text, value) in [
            ("0", 0),
            ("10", 10),
            ("-7", -7),
            ("10.0", 10),
            ("1E+1", 10),
            ("1e3", 1000),
            ("-2.50E1", -25),
            ("0.0", 0),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
            ("9.223372036854775807E18", i64::MAX),
            ("12000E-3", 12),
        ] {
            assert_eq!(exact_i64(text), Some(value), "{text}");
        }
    }

    #[test]
    fn fractions_and_out_of_range_values_are_refused() {
        for text in [
            "14.4",
            "0.5",
            "1E-1",
            "9223372036854775808",
            "-9223372036854775809",
            "1E19",
            "1E+38",
            "",
            "-",
            "abc",
            "1.2.3",
            "NaN",
        ] {
            assert_eq!(exact_i64(text), None, "{text}");
        }
    }
}
