//! Resource quantities (`500m`, `2`, `128Mi`, `1G`) as integers the capacity check can add.
//!
//! CPU is counted in millicores and everything else in milli-units of its base unit, so one
//! function serves both; the suffixes are those of `k8s.io/apimachinery/pkg/api/resource`.

/// The quantity in thousandths of its base unit, or `None` when the string is not a quantity.
pub fn milli(quantity: &str) -> Option<i128> {
    let q = quantity.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let factor_milli: i128 = match suffix {
        "" => 1000,
        "m" => 1,
        "k" => 1000 * 1000,
        "M" => 1000 * 1_000_000,
        "G" => 1000 * 1_000_000_000,
        "T" => 1000 * 1_000_000_000_000,
        "Ki" => 1000 * 1024,
        "Mi" => 1000 * (1 << 20),
        "Gi" => 1000 * (1 << 30),
        "Ti" => 1000 * (1 << 40),
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    Some((value * factor_milli as f64).round() as i128)
}

#[cfg(test)]
mod tests {
    use super::milli;

    #[test]
    fn parses_decimal_and_binary_suffixes() {
        assert_eq!(milli("500m"), Some(500));
        assert_eq!(milli("2"), Some(2000));
        assert_eq!(milli("0.5"), Some(500));
        assert_eq!(milli("1Ki"), Some(1024 * 1000));
        assert_eq!(milli("128Mi"), Some(128 * 1024 * 1024 * 1000));
        assert_eq!(milli("1G"), Some(1_000_000_000_000));
        assert_eq!(milli("12parsecs"), None);
    }
}
