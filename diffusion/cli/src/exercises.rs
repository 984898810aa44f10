//! The students' notebooks, made from the solutions (`diffusion exercises`).
//!
//! The notebooks in `notebooks/` are the solutions. In their code cells, a region
//!
//! ```text
//! // BEGIN SOLUTION
//! // HINT: the cumulative product of a
//! ...the solution...
//! // END SOLUTION
//! ```
//!
//! is what a student writes. The exercise notebook `notebooks/exercises/NN_name.ipynb` replaces
//! each region by `todo!("<hint>")` at the region's indentation (so that the cell compiles and
//! its check reports the hint when run), drops every output, and points the paths that start
//! with `../` one folder further up. `notebooks/exercises/evcxr.toml` is the solutions' kernel
//! settings with the build directory shared (`../.evcxr`).

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const BEGIN: &str = "// BEGIN SOLUTION";
const END: &str = "// END SOLUTION";
const HINT: &str = "// HINT:";

/// The placeholder for a region without a hint line.
pub const NO_HINT: &str = "write this part";

/// A notebook cell's source as one string (Jupyter stores a string or a list of lines).
pub fn source_of(cell: &Value) -> String {
    match &cell["source"] {
        Value::String(s) => s.clone(),
        Value::Array(lines) => lines.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    }
}

/// Jupyter's layout of a cell's source: one string per line, each but the last ending in `\n`.
fn source_lines(text: &str) -> Value {
    let mut lines: Vec<Value> = text
        .split_inclusive('\n')
        .map(|l| Value::String(l.to_string()))
        .collect();
    if lines.is_empty() {
        lines.push(Value::String(String::new()));
    }
    Value::Array(lines)
}

/// One region: its hint and the solution's lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub hint: String,
    pub solution: Vec<String>,
}

/// Replaces the solution regions of one cell's code; returns the new code and the regions.
/// `place` names the cell in errors.
pub fn strip_solutions(code: &str, place: &str) -> Result<(String, Vec<Region>)> {
    let mut out = String::new();
    let mut regions = Vec::new();
    let mut open: Option<(usize, String, Region)> = None; // (line number, indent, region)
    for (n, line) in code.split_inclusive('\n').enumerate() {
        let trimmed = line.trim();
        match &mut open {
            None if trimmed.starts_with(BEGIN) => {
                let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
                open = Some((
                    n + 1,
                    indent,
                    Region {
                        hint: String::new(),
                        solution: Vec::new(),
                    },
                ));
            }
            None if trimmed.starts_with(END) || trimmed.starts_with(HINT) => bail!(
                "{place}, line {}: `{trimmed}` outside a `{BEGIN}` ... `{END}` region",
                n + 1
            ),
            None => out.push_str(line),
            Some((start, ..)) if trimmed.starts_with(BEGIN) => bail!(
                "{place}, line {}: a second `{BEGIN}` before the `{END}` of the region opened at line {start}",
                n + 1
            ),
            Some((_, indent, region)) if trimmed.starts_with(END) => {
                let hint = if region.hint.is_empty() {
                    NO_HINT
                } else {
                    &region.hint
                };
                out.push_str(&format!("{indent}todo!({hint:?})\n"));
                regions.push(region.clone());
                open = None;
            }
            Some((_, _, region)) if trimmed.starts_with(HINT) && region.solution.is_empty() => {
                region.hint = trimmed[HINT.len()..].trim().to_string();
            }
            Some((_, _, region)) => region.solution.push(line.trim_end().to_string()),
        }
    }
    if let Some((start, ..)) = open {
        bail!("{place}: the `{BEGIN}` at line {start} has no `{END}`");
    }
    Ok((out, regions))
}

/// Paths relative to `notebooks/` (`"../diffusion"`, `"../runs"`) as seen from
/// `notebooks/exercises/`.
fn one_folder_deeper(code: &str) -> String {
    code.replace("\"../", "\"../../")
}

/// The exercise notebook of a solution notebook, and its regions.
pub fn exercise_notebook(solution: &Value, name: &str) -> Result<(Value, Vec<Region>)> {
    let cells = solution["cells"]
        .as_array()
        .with_context(|| format!("{name} has no cells: is it a notebook?"))?;
    let mut out_cells = Vec::with_capacity(cells.len());
    let mut all = Vec::new();
    for (i, cell) in cells.iter().enumerate() {
        let mut cell = cell.clone();
        if cell["cell_type"] == "code" {
            let (code, regions) = strip_solutions(&source_of(&cell), &format!("{name}, cell {i}"))?;
            all.extend(regions);
            cell["source"] = source_lines(&one_folder_deeper(&code));
            cell["outputs"] = json!([]);
            cell["execution_count"] = Value::Null;
        }
        out_cells.push(cell);
    }
    let mut nb = solution.clone();
    nb["cells"] = Value::Array(out_cells);
    nb["metadata"]["diffusion"] = json!({
        "exercise": name.trim_end_matches(".ipynb"),
        "solution": format!("../{name}"),
    });
    Ok((nb, all))
}

/// The notebooks of `notebooks/` that have solution regions, by name.
pub fn solution_notebooks(notebooks: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in
        std::fs::read_dir(notebooks).with_context(|| format!("reading {}", notebooks.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "ipynb")
            && std::fs::read_to_string(&path)?.contains(BEGIN)
        {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// What `diffusion exercises` writes: `(path, contents)` for each exercise notebook and the
/// kernel settings, from the solutions in `notebooks`.
pub fn exercise_files(notebooks: &Path) -> Result<Vec<(PathBuf, String)>> {
    let out = notebooks.join("exercises");
    let mut files = Vec::new();
    for path in solution_notebooks(notebooks)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("a notebook name that is not UTF-8")?
            .to_string();
        let solution: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("{} is not valid notebook JSON", path.display()))?;
        let (nb, regions) = exercise_notebook(&solution, &name)?;
        if regions.is_empty() {
            continue;
        }
        files.push((out.join(&name), serde_json::to_string_pretty(&nb)? + "\n"));
    }
    let settings = std::fs::read_to_string(notebooks.join("evcxr.toml"))
        .context("reading notebooks/evcxr.toml")?;
    if !settings.contains("tmpdir = \".evcxr\"") {
        bail!("notebooks/evcxr.toml no longer sets `tmpdir = \".evcxr\"`: update the exercises' settings here");
    }
    let settings = format!(
        "# Written by `diffusion exercises` from ../evcxr.toml: the same settings, the same build\n\
         # directory (one kernel at a time, solutions or exercises).\n{}",
        settings.replace("tmpdir = \".evcxr\"", "tmpdir = \"../.evcxr\"")
    );
    files.push((out.join("evcxr.toml"), settings));
    Ok(files)
}

/// Writes the exercise files (each atomically); returns their paths.
pub fn write_exercises(notebooks: &Path) -> Result<Vec<PathBuf>> {
    let files = exercise_files(notebooks)?;
    std::fs::create_dir_all(notebooks.join("exercises"))?;
    for (path, contents) in &files {
        diffusion::files::write_atomic(path, contents.as_bytes())?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

/// The exercise files that differ from what `diffusion exercises` would write (missing ones
/// included).
pub fn stale_exercises(notebooks: &Path) -> Result<Vec<PathBuf>> {
    Ok(exercise_files(notebooks)?
        .into_iter()
        .filter(|(path, contents)| std::fs::read_to_string(path).ok().as_ref() != Some(contents))
        .map(|(p, _)| p)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_becomes_todo_with_its_hint_at_its_indent() {
        let code = "fn f() -> u32 {\n    // BEGIN SOLUTION\n    // HINT: add them\n    1 + 2\n    // END SOLUTION\n}\nf()";
        let (out, regions) = strip_solutions(code, "test").unwrap();
        assert_eq!(out, "fn f() -> u32 {\n    todo!(\"add them\")\n}\nf()");
        assert_eq!(
            regions,
            vec![Region {
                hint: "add them".into(),
                solution: vec!["    1 + 2".into()]
            }]
        );
        let (out, _) = strip_solutions("// BEGIN SOLUTION\nx\n// END SOLUTION\n", "test").unwrap();
        assert_eq!(out, format!("todo!({NO_HINT:?})\n"));
    }

    #[test]
    fn unbalanced_markers_are_errors_that_name_the_line() {
        let e = strip_solutions("a\n// BEGIN SOLUTION\nb\n", "nb, cell 3").unwrap_err();
        assert!(e
            .to_string()
            .contains("nb, cell 3: the `// BEGIN SOLUTION` at line 2 has no"));
        let e = strip_solutions("a\n// END SOLUTION\n", "c").unwrap_err();
        assert!(e.to_string().contains("line 2"));
        let e = strip_solutions("// BEGIN SOLUTION\n// BEGIN SOLUTION\n", "c").unwrap_err();
        assert!(e.to_string().contains("a second"));
    }

    #[test]
    fn hint_quotes_are_escaped() {
        let (out, _) = strip_solutions(
            "// BEGIN SOLUTION\n// HINT: use \"cumprod\"\nx\n// END SOLUTION\n",
            "c",
        )
        .unwrap();
        assert_eq!(out, "todo!(\"use \\\"cumprod\\\"\")\n");
    }
}
