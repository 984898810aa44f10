//! A model summary: each layer, the shape it outputs for one image, and its parameters, shown as
//! a table in the notebook and as text elsewhere.

use std::fmt;

/// One line of a [`Summary`].
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// The layer's `state_dict` prefix (`down1`, `up0`, ...).
    pub name: String,
    /// What it computes.
    pub what: String,
    /// The shape it outputs for one image, `[C, H, W]`.
    pub output: [usize; 3],
    /// Its trainable parameters.
    pub parameters: usize,
}

/// The layers of a network in the order they run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub title: String,
    /// The shape of one input image, `[C, H, W]`.
    pub input: [usize; 3],
    pub layers: Vec<Layer>,
}

impl Summary {
    pub fn new(title: &str, input: [usize; 3]) -> Self {
        Self {
            title: title.to_string(),
            input,
            layers: vec![],
        }
    }

    /// Adds a layer.
    pub fn row(&mut self, name: &str, what: &str, output: [usize; 3], parameters: usize) {
        self.layers.push(Layer {
            name: name.to_string(),
            what: what.to_string(),
            output,
            parameters,
        });
    }

    /// The sum of the layers' parameters.
    pub fn parameters(&self) -> usize {
        self.layers.iter().map(|l| l.parameters).sum()
    }

    /// Shows the table in the evcxr Jupyter kernel.
    pub fn evcxr_display(&self) {
        let mut html = format!(
            "<table><caption>{}: input [{}]</caption><tr><th>layer</th><th>what</th><th>output</th><th>parameters</th></tr>",
            self.title,
            shape(&self.input)
        );
        for l in &self.layers {
            html += &format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>[{}]</td><td style=\"text-align:right\">{}</td></tr>",
                l.name,
                l.what,
                shape(&l.output),
                thousands(l.parameters)
            );
        }
        html += &format!(
            "<tr><th colspan=\"3\">total</th><th style=\"text-align:right\">{}</th></tr></table>",
            thousands(self.parameters())
        );
        crate::display::output::print_evcxr(Ok(("text/html", html)));
    }
}

fn shape(s: &[usize; 3]) -> String {
    format!("{}, {}, {}", s[0], s[1], s[2])
}

/// `240385` → `240,385`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: input [{}]", self.title, shape(&self.input))?;
        let width = self.layers.iter().map(|l| l.what.len()).max().unwrap_or(0);
        for l in &self.layers {
            writeln!(
                f,
                "  {:<10} {:<width$}  -> [{:>12}]  {:>9}",
                l.name,
                l.what,
                shape(&l.output),
                thousands(l.parameters)
            )?;
        }
        write!(f, "  total parameters: {}", thousands(self.parameters()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(240385), "240,385");
        assert_eq!(thousands(1979777), "1,979,777");
    }
}
