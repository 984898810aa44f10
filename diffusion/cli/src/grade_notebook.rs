//! Grading exercise notebooks (`diffusion grade --notebook SUBMISSION.ipynb`, or a folder of them).
//!
//! Each submission is copied into `target/grade/` (laid out like the repository, the kernel
//! build shared with the notebooks'), one check cell per exercise of its solution notebook is
//! appended (`diffusion::check::q(q)`, ...), and the copy runs headless in a fresh kernel with a
//! time limit. The checks record their verdicts (`DIFFUSION_CHECK_LOG`); each check's last
//! verdict becomes one item of an [`answers::grade::Report`] with partial credit (the share of
//! its cases that passed). A check the run never reached (the notebook did not compile, looped,
//! or crashed the kernel) is `missing`, with the reason. Nothing in the submission's folder is
//! written.

use answers::grade::report::{Item, Report, Verdict};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

use crate::exercises::source_of;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How submissions are run.
#[derive(Debug, Clone)]
pub struct GradeSettings {
    /// Wall-clock limit for one notebook, kernel start and compilation included.
    pub time_limit: Duration,
    /// `DIFFUSION_MAX_STEPS` for the notebook's training cells (`None`: the notebook's own).
    pub max_steps: Option<usize>,
    /// The repository (solutions in `notebooks/`, the kernel in `.tools/`, JupyterLab in `.venv/`).
    pub root: PathBuf,
    /// Where the copies run (default `target/grade` under `root`).
    pub work: PathBuf,
}

impl GradeSettings {
    pub fn new(root: &Path) -> Self {
        Self {
            time_limit: Duration::from_secs(900),
            max_steps: Some(100),
            root: root.to_path_buf(),
            work: root.join("target/grade"),
        }
    }
}

/// One exercise of a solution notebook: the check and the function handed to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Exercise {
    pub check: String,
    pub function: String,
}

/// The exercises of a solution notebook: every `diffusion::check::NAME(FUNCTION)` in its code.
pub fn exercises_of(solution: &Value) -> Vec<Exercise> {
    let mut found: Vec<Exercise> = Vec::new();
    let pattern = "diffusion::check::";
    for cell in solution["cells"].as_array().into_iter().flatten() {
        if cell["cell_type"] != "code" {
            continue;
        }
        let code = source_of(cell);
        let mut rest = code.as_str();
        while let Some(at) = rest.find(pattern) {
            rest = &rest[at + pattern.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let after = &rest[name.len()..];
            if let Some(args) = after.strip_prefix('(') {
                let function: String = args
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if args[function.len()..].starts_with(')')
                    && !function.is_empty()
                    && !found.iter().any(|e| e.check == name)
                {
                    found.push(Exercise {
                        check: name,
                        function,
                    });
                }
            }
        }
    }
    found
}

/// The exercise a submission answers: its metadata (`diffusion.exercise`, written by
/// `diffusion exercises`), else the `NN_` prefix of its file name matched with a solution.
fn exercise_name(submission: &Value, path: &Path, notebooks: &Path) -> Result<String> {
    if let Some(name) = submission["metadata"]["diffusion"]["exercise"].as_str() {
        return Ok(name.to_string());
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let prefix: String = stem.chars().take_while(char::is_ascii_digit).collect();
    if !prefix.is_empty() {
        for entry in std::fs::read_dir(notebooks)? {
            let name = entry?.file_name().to_string_lossy().to_string();
            if name.starts_with(&format!("{prefix}_")) && name.ends_with(".ipynb") {
                return Ok(name.trim_end_matches(".ipynb").to_string());
            }
        }
    }
    bail!(
        "cannot tell which exercise {} answers: its metadata has no `diffusion.exercise` and its \
         name does not start with a notebook number (01_ ... 04_)",
        path.display()
    )
}

/// What the run of a notebook ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// Every cell ran (some may have failed).
    Finished,
    /// Stopped at the time limit.
    TimedOut(Duration),
    /// The kernel or the runner failed (the kernel crashed, say); the runner's last words.
    Crashed(String),
}

/// The executed notebook's first error: the cell number and its message.
fn first_error(executed: &Value) -> Option<(usize, String)> {
    for (i, cell) in executed["cells"].as_array()?.iter().enumerate() {
        for out in cell["outputs"].as_array().into_iter().flatten() {
            let text = if out["output_type"] == "error" {
                format!(
                    "{}: {}",
                    out["ename"].as_str().unwrap_or("error"),
                    out["evalue"].as_str().unwrap_or("")
                )
            } else if out["output_type"] == "stream" && out["name"] == "stderr" {
                match &out["text"] {
                    Value::String(s) => s.clone(),
                    Value::Array(l) => l.iter().filter_map(Value::as_str).collect(),
                    _ => String::new(),
                }
            } else {
                continue;
            };
            let first_lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(3)
                .collect();
            return Some((i, first_lines.join(" / ")));
        }
    }
    None
}

/// Lays out `work` like the repository for a notebook in `notebooks/exercises/`: the crate
/// linked, the kernel settings, and the kernel build started from `make setup`'s.
fn prepare(settings: &GradeSettings) -> Result<PathBuf> {
    let root = &settings.root;
    let work = &settings.work;
    let dir = work.join("notebooks/exercises");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let link = work.join("diffusion");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(root.join("diffusion"), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    std::fs::copy(
        root.join("notebooks/exercises/evcxr.toml"),
        dir.join("evcxr.toml"),
    )
    .context("copying notebooks/exercises/evcxr.toml (run `diffusion exercises`)")?;
    let build = work.join("notebooks/.evcxr");
    std::fs::create_dir_all(&build)?;
    let warm = root.join("notebooks/.evcxr/target");
    if !build.join("target").exists() && warm.exists() {
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&warm)
            .arg(build.join("target"))
            .status();
        if !copied.is_ok_and(|s| s.success()) {
            let _ = std::fs::remove_dir_all(build.join("target")); // a cold build, not a broken one
        }
    }
    Ok(dir)
}

/// Runs `notebook` (in `dir`) headless into `executed`, stopping it at the time limit.
fn execute(
    settings: &GradeSettings,
    dir: &Path,
    notebook: &Path,
    executed: &Path,
    log: &Path,
) -> Result<RunEnd> {
    let jupyter = settings.root.join(".venv/bin/jupyter");
    let kernel = settings
        .root
        .join(".venv/share/jupyter/kernels/rust/kernel.json");
    if !jupyter.exists() || !kernel.exists() {
        bail!("grading notebooks needs the Rust kernel and JupyterLab: run `make setup` first");
    }
    let limit = settings.time_limit.as_secs().max(1);
    let mut command = Command::new(&jupyter);
    command
        .args([
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--allow-errors",
        ])
        .arg(format!("--ExecutePreprocessor.timeout={limit}"))
        .arg("--output")
        .arg(executed)
        .arg(notebook)
        .current_dir(dir)
        .env(diffusion::check::LOG_VARIABLE, log)
        .env("JUPYTER_PATH", settings.root.join(".venv/share/jupyter"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(steps) = settings.max_steps {
        command.env("DIFFUSION_MAX_STEPS", steps.to_string());
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .context("starting .venv/bin/jupyter nbconvert")?;
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = std::io::Read::read_to_string(e, &mut text);
        }
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > settings.time_limit {
            kill_tree(child.id());
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stderr = reader.join().unwrap_or_default();
    Ok(match status {
        None => RunEnd::TimedOut(settings.time_limit),
        Some(s) if s.success() => RunEnd::Finished,
        Some(_) => {
            let last: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = last[last.len().saturating_sub(3)..].join(" / ");
            if tail.contains("Timeout") || tail.contains("timed out") {
                RunEnd::TimedOut(settings.time_limit)
            } else {
                RunEnd::Crashed(tail)
            }
        }
    })
}

/// The processes descended from `root`, read from `/proc` (each one's parent is the 4th field of
/// its `stat`, after the name in parentheses).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if let Some(ppid) = after_name.split_whitespace().nth(1) {
            if let Ok(ppid) = ppid.parse::<u32>() {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.split_off(1)
}

/// Sends `signal` to the process group `group` and to each of `pids`, by the system call itself:
/// no `kill` program, whose reading of a negative pid differs between versions (one reads
/// `kill -KILL -PGID` as "every process").
fn signal(signal: libc::c_int, group: u32, pids: &[u32]) {
    let as_pid = |p: u32| libc::pid_t::try_from(p).ok().filter(|&p| p > 1);
    if let Some(g) = as_pid(group) {
        // SAFETY: kill(2) takes plain integers; -g names exactly the group g (never 0 or -1)
        unsafe { libc::kill(-g, signal) };
    }
    for p in pids.iter().filter_map(|&p| as_pid(p)) {
        // SAFETY: as above, one process
        unsafe { libc::kill(p, signal) };
    }
}

/// Stops `root` (the leader of its own process group) and everything it started. Jupyter starts
/// each kernel in a session of its own, so the kernel and the process that runs the student's
/// code are found by parentage: the tree is frozen (`SIGSTOP`, so nothing in it can start
/// another process), read again, then killed whole, before anything in it is orphaned.
fn kill_tree(root: u32) {
    let mut pids = descendants(root);
    for _ in 0..3 {
        signal(libc::SIGSTOP, root, &pids);
        let again = descendants(root);
        if again == pids {
            break;
        }
        pids = again;
    }
    signal(libc::SIGKILL, root, &pids);
}

/// The verdicts the log holds: each check's last one.
fn read_log(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut verdicts: Vec<Value> = Vec::new();
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            verdicts.retain(|old| old["check"] != v["check"]);
            verdicts.push(v);
        }
    }
    verdicts
}

/// Grades one submission. Errors only when the grading itself cannot run (no set-up, no
/// solution for the exercise); a submission that is not valid JSON gets a report saying so.
pub fn grade_notebook(settings: &GradeSettings, submission: &Path) -> Result<Report> {
    let title = submission.display().to_string();
    let notebooks = settings.root.join("notebooks");
    let text = std::fs::read_to_string(submission)
        .with_context(|| format!("reading the submission {}", submission.display()))?;
    let parsed: Result<Value, _> = serde_json::from_str(&text);
    let nb = match parsed {
        Ok(nb) if nb["cells"].is_array() => nb,
        Ok(_) | Err(_) => {
            return Ok(Report {
                set_id: "notebook".to_string(),
                title,
                items: Vec::new(),
                unknown_ids: Vec::new(),
                notes: vec![format!(
                    "{} is not a Jupyter notebook (not JSON with a `cells` list): nothing was run",
                    submission.display()
                )],
            })
        }
    };
    let exercise = exercise_name(&nb, submission, &notebooks)?;
    let solution_path = notebooks.join(format!("{exercise}.ipynb"));
    let solution: Value = serde_json::from_str(
        &std::fs::read_to_string(&solution_path)
            .with_context(|| format!("reading the solution {}", solution_path.display()))?,
    )?;
    let exercises = exercises_of(&solution);
    if exercises.is_empty() {
        bail!(
            "{} has no `diffusion::check::` cells to grade with",
            solution_path.display()
        );
    }

    // the copy, with the grader's check cells at the end
    let dir = prepare(settings)?;
    let mut copy = nb.clone();
    let cells = copy["cells"].as_array_mut().context("cells")?;
    for e in &exercises {
        cells.push(json!({
            "cell_type": "code",
            "execution_count": null,
            "metadata": {"tags": ["grader"]},
            "outputs": [],
            "source": format!("diffusion::check::{}({})", e.check, e.function),
        }));
    }
    let notebook = dir.join("submission.ipynb");
    let executed = dir.join("submission.executed.ipynb");
    let log = dir.join("checks.jsonl");
    for stale in [&executed, &log] {
        let _ = std::fs::remove_file(stale);
    }
    std::fs::write(&notebook, serde_json::to_string(&copy)?)?;
    let started = Instant::now();
    let end = execute(settings, &dir, &notebook, &executed, &log)?;
    let took = started.elapsed().as_secs_f64();

    let mut notes = Vec::new();
    match &end {
        RunEnd::Finished => notes.push(format!("ran to the end in {took:.0} s")),
        RunEnd::TimedOut(limit) => notes.push(format!(
            "stopped at the time limit ({} s): the checks it had not reached get no points",
            limit.as_secs()
        )),
        RunEnd::Crashed(why) => notes.push(format!(
            "the kernel stopped after {took:.0} s ({why}): the checks it had not reached get no points"
        )),
    }
    let executed_nb: Option<Value> = std::fs::read_to_string(&executed)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let error = executed_nb.as_ref().and_then(first_error);
    if let Some((cell, message)) = &error {
        notes.push(format!("first error, in cell {cell}: {message}"));
    }
    let verdicts = read_log(&log);
    let items = exercises
        .iter()
        .map(|e| item_for(e, &verdicts, &end, &exercise))
        .collect();
    Ok(Report {
        set_id: exercise,
        title,
        items,
        unknown_ids: Vec::new(),
        notes,
    })
}

fn item_for(e: &Exercise, verdicts: &[Value], end: &RunEnd, exercise: &str) -> Item {
    let link = format!("notebooks/{exercise}.ipynb");
    let prompt = format!("`{}` checked by diffusion::check::{}", e.function, e.check);
    let Some(v) = verdicts.iter().find(|v| v["check"] == e.check.as_str()) else {
        let why = match end {
            RunEnd::Finished => format!(
                "not run: the check cell did not compile (is `{}` defined, with the exercise's signature?)",
                e.function
            ),
            RunEnd::TimedOut(_) => "not reached before the time limit".to_string(),
            RunEnd::Crashed(_) => "not reached: the kernel stopped".to_string(),
        };
        return Item {
            id: e.check.clone(),
            prompt,
            verdict: Verdict::Missing,
            expected: None,
            given: None,
            detail: Some(why),
            hint: None,
            link,
            credit: Some(0.0),
        };
    };
    let passed = v["passed"].as_u64().unwrap_or(0);
    let total = v["total"].as_u64().unwrap_or(0);
    let correct = total > 0 && passed == total;
    Item {
        id: e.check.clone(),
        prompt,
        verdict: if correct {
            Verdict::Correct
        } else {
            Verdict::Incorrect
        },
        expected: Some(format!("all {total} cases")),
        given: Some(format!("{passed} of {total} cases")),
        detail: v["message"]
            .as_str()
            .map(|m| format!("{}: {m}", v["case"].as_str().unwrap_or("a case"))),
        hint: v["hint"].as_str().map(str::to_string),
        link,
        credit: Some(if total == 0 {
            0.0
        } else {
            passed as f64 / total as f64
        }),
    }
}

/// The submissions of a path: the notebook itself, or the `.ipynb` files of a folder (sorted).
pub fn submissions(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "ipynb"))
            .collect();
        found.sort();
        if found.is_empty() {
            bail!("{} holds no .ipynb submissions", path.display());
        }
        Ok(found)
    } else if path.exists() {
        Ok(vec![path.to_path_buf()])
    } else {
        bail!(
            "{} does not exist: give a submitted .ipynb or a folder of them",
            path.display()
        )
    }
}

/// One CSV row per report: the student (file stem), the points, the total, then each check's
/// points, under a header of the checks of the first report.
pub fn csv(reports: &[(PathBuf, Report)]) -> String {
    let checks: Vec<String> = reports
        .first()
        .map(|(_, r)| r.items.iter().map(|i| i.id.clone()).collect())
        .unwrap_or_default();
    let mut out = format!("student,exercise,points,of,{}\n", checks.join(","));
    for (path, r) in reports {
        let student = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let per: Vec<String> = checks
            .iter()
            .map(|c| {
                r.items
                    .iter()
                    .find(|i| &i.id == c)
                    .map(|i| format!("{:.3}", i.earned()))
                    .unwrap_or_default()
            })
            .collect();
        out.push_str(&format!(
            "{},{},{:.3},{},{}\n",
            student.replace(',', " "),
            r.set_id,
            r.points(),
            r.gradable(),
            per.join(",")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exercises_are_the_check_calls_of_the_solution() {
        let nb = json!({"cells": [
            {"cell_type": "code", "source": ["fn q() {}\n", "diffusion::check::q(q)"]},
            {"cell_type": "markdown", "source": "diffusion::check::not_code(x)"},
            {"cell_type": "code", "source": "println!(\"{}\", diffusion::check::a_bar(my_a_bar));\ndiffusion::check::q(q)"},
            {"cell_type": "code", "source": "diffusion::check::LOG_VARIABLE"},
        ]});
        assert_eq!(
            exercises_of(&nb),
            vec![
                Exercise {
                    check: "q".into(),
                    function: "q".into()
                },
                Exercise {
                    check: "a_bar".into(),
                    function: "my_a_bar".into()
                },
            ]
        );
    }

    /// Whether `pid` still runs (a zombie waiting for its parent does not).
    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    }

    #[test]
    fn a_timed_out_run_is_stopped_with_the_kernel_it_started_in_its_own_session() {
        // as Jupyter starts a kernel: `setsid`, so killing the runner's process group misses it
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("kernel.pid");
        let script = format!(
            "setsid sh -c 'echo $$ > {}; exec sleep 300' & wait",
            pidfile.display()
        );
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut runner = command.spawn().unwrap();
        let started = Instant::now();
        let kernel = loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                break pid;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no kernel started"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(descendants(runner.id()).contains(&kernel));
        assert!(alive(kernel));
        kill_tree(runner.id());
        runner.wait().unwrap();
        let stopped = Instant::now();
        while alive(kernel) && stopped.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(kernel), "the kernel {kernel} outlived its runner");
    }

    #[test]
    fn the_last_verdict_of_a_check_counts() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(
            &log,
            "{\"check\":\"q\",\"passed\":0,\"total\":3}\nnot json\n{\"check\":\"q\",\"passed\":3,\"total\":3}\n",
        )
        .unwrap();
        let v = read_log(&log);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["passed"], 3);
        let e = Exercise {
            check: "q".into(),
            function: "q".into(),
        };
        let item = item_for(&e, &v, &RunEnd::Finished, "02_diffusion");
        assert_eq!((item.verdict, item.earned()), (Verdict::Correct, 1.0));
        let missing = item_for(
            &Exercise {
                check: "sample".into(),
                function: "sample".into(),
            },
            &v,
            &RunEnd::TimedOut(Duration::from_secs(5)),
            "02_diffusion",
        );
        assert_eq!(missing.verdict, Verdict::Missing);
        assert!(missing.detail.unwrap().contains("time limit"));
    }
}
