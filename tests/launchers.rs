//! The launchers in pipelines/: Kubernetes manifests pass a schema validator (PyPI
//! `kubernetes-validate`, which bundles the Kubernetes schemas offline; scripts/test
//! installs it), a broken copy does not, the Indexed Job's completion count matches its
//! `--shard env/N`, and the Slurm scripts are valid bash that pass the shard count.

use std::path::Path;
use std::process::Command;

fn validator() -> Option<Command> {
    match Command::new("kubernetes-validate")
        .arg("--version")
        .output()
    {
        Ok(o) if o.status.success() => Some(Command::new("kubernetes-validate")),
        _ => {
            if std::env::var_os("PREP_REQUIRE_TOOLS").is_some() {
                panic!("kubernetes-validate is missing but PREP_REQUIRE_TOOLS is set");
            }
            eprintln!("SKIPPED: kubernetes-validate not installed (pip install kubernetes-validate; scripts/test does)");
            None
        }
    }
}

fn manifests() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/k8s"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
    v.sort();
    v
}

#[test]
fn kubernetes_manifests_pass_the_schema_and_a_broken_one_fails() {
    let files = manifests();
    assert_eq!(files.len(), 2, "{files:?}");
    let Some(mut v) = validator() else { return };
    let o = v.arg("--strict").args(&files).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("passed for resource job/prep-build-laion-a"),
        "{text}"
    );
    assert!(
        text.contains("passed for resource cronjob/prep-eval-nightly"),
        "{text}"
    );

    // The validator is not a rubber stamp: a wrong type and an unknown field are caught.
    let tmp = tempfile::tempdir().unwrap();
    let job = std::fs::read_to_string(&files[0]).unwrap();
    for (what, broken) in [
        (
            "completions as a string",
            job.replace("completions: 16", "completions: sixteen"),
        ),
        (
            "unknown field",
            job.replace("parallelism: 8", "parallelism: 8\n  parallelismm: 8"),
        ),
    ] {
        assert_ne!(broken, job, "{what}: the replacement must apply");
        let p = tmp.path().join("broken.yaml");
        std::fs::write(&p, broken).unwrap();
        let o = validator()
            .unwrap()
            .arg("--strict")
            .arg(&p)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{what} must fail validation");
    }
}

#[test]
fn indexed_job_count_matches_its_shard_flag() {
    let job = std::fs::read_to_string(&manifests()[0]).unwrap();
    let completions = job
        .lines()
        .find_map(|l| l.trim().strip_prefix("completions: "))
        .expect("completions");
    assert!(job.contains("completionMode: Indexed"));
    assert!(
        job.contains(&format!("- env/{completions}\n")),
        "--shard env/N must equal completions ({completions})"
    );
}

#[test]
fn slurm_scripts_are_valid_bash_and_pass_the_shard_count() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/slurm");
    for name in [
        "build-array.sbatch",
        "build-array-gpu.sbatch",
        "eval-nightly.sbatch",
    ] {
        let p = dir.join(name);
        let o = Command::new("bash").arg("-n").arg(&p).output().unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = std::fs::read_to_string(&p).unwrap();
        if name.starts_with("build") {
            assert!(text.contains("--shard \"env/${PREP_SHARDS}\""), "{name}");
        }
    }
    let gpu = std::fs::read_to_string(dir.join("build-array-gpu.sbatch")).unwrap();
    assert!(gpu.contains("--device cuda") && gpu.contains("#SBATCH --gres=gpu:1"));
    // Without PREP_SHARDS the launcher refuses instead of guessing from SLURM_ARRAY_TASK_COUNT.
    let o = Command::new("bash")
        .arg(dir.join("build-array.sbatch"))
        .env_remove("PREP_SHARDS")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("set PREP_SHARDS to the array size"));
}
