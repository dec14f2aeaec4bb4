//! The median and spread of repeated measurements.

use std::fmt;

/// Repeated measurements of one quantity.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median (mean of the two middle values for an even count); NaN when empty.
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }

    /// `median unit (min–max, n=N)`, with `digits` decimals.
    pub fn show(&self, unit: &str, digits: usize) -> String {
        Shown {
            s: self,
            unit,
            digits,
        }
        .to_string()
    }
}

struct Shown<'a> {
    s: &'a Samples,
    unit: &'a str,
    digits: usize,
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.digits;
        if self.s.len() == 0 {
            return write!(f, "—");
        }
        write!(f, "{:.d$} {}", self.s.median(), self.unit)?;
        if self.s.len() > 1 {
            write!(
                f,
                " ({:.d$}–{:.d$}, n={})",
                self.s.min(),
                self.s.max(),
                self.s.len()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Samples;

    #[test]
    fn median_and_spread() {
        let s = Samples(vec![5.0, 1.0, 3.0]);
        assert_eq!(s.median(), 3.0);
        assert_eq!(s.show("ms", 1), "3.0 ms (1.0–5.0, n=3)");
        let even = Samples(vec![4.0, 1.0, 2.0, 3.0]);
        assert_eq!(even.median(), 2.5);
        assert_eq!(Samples(vec![7.0]).show("s", 0), "7 s");
        assert!(Samples::default().median().is_nan());
        assert_eq!(Samples::default().show("s", 0), "—");
    }
}
