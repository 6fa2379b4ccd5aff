//! `IntOrString` fields (maxSurge, maxUnavailable, minAvailable) resolved against a total,
//! as upstream's `intstr.GetScaledValueFromIntOrPercent`.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// `value` as a count out of `total`; percentages round up or down as asked. A malformed
/// percentage is an error naming the value and the expected form.
pub(crate) fn scaled(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    format!("invalid value {s:?}: expected an integer or a percentage like \"25%\"")
                })?;
            let product = percent * i64::from(total);
            let scaled = if round_up {
                (product + 99).div_euclid(100)
            } else {
                product.div_euclid(100)
            };
            i32::try_from(scaled)
                .map_err(|_| format!("percentage {s:?} of {total} is out of range"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_as_asked() {
        let quarter = IntOrString::String("25%".into());
        assert_eq!(scaled(&quarter, 5, true), Ok(2));
        assert_eq!(scaled(&quarter, 5, false), Ok(1));
        assert_eq!(scaled(&IntOrString::Int(3), 5, false), Ok(3));
    }

    #[test]
    fn rejects_malformed_percentages() {
        let err = scaled(&IntOrString::String("half".into()), 4, true).unwrap_err();
        assert!(err.contains("\"half\""), "{err}");
    }
}
