//! The one field-problem type of the whole settings tree.

/// One problem with a setting: the field path and what is wrong and what
/// to do. Displays as `field: message`, e.g. `ha.timeout_s: 4 is not
/// allowed: use 3, 6, 9, 12 or 15 (seconds)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Problem {
    /// Path of the field: dotted, with `[index]` or `[name]` for list
    /// elements (`interfaces[0].shared`, `virtual_services[web].port`).
    pub field: String,
    /// What is wrong, the allowed values and the fix.
    pub message: String,
}

impl Problem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// `problems` with their field paths put under `path` (`unit1` under
/// `interfaces[0]` is `interfaces[0].unit1`): conversions name fields
/// relative to the message converted; whoever knows where it sits puts
/// them in place.
pub fn under(path: &str, problems: Vec<Problem>) -> Vec<Problem> {
    problems
        .into_iter()
        .map(|p| Problem {
            field: if p.field.is_empty() { path.to_owned() } else { format!("{path}.{}", p.field) },
            message: p.message,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_field_then_message_and_nests() {
        let p = Problem::new("timeout_s", "4 is not allowed");
        assert_eq!(p.to_string(), "timeout_s: 4 is not allowed");
        assert_eq!(under("ha", vec![p])[0].to_string(), "ha.timeout_s: 4 is not allowed");
    }
}
