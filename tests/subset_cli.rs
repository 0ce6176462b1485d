//! `prep subset` on a dataset laid out like `prep build`'s output (data/part-*.parquet with
//! a `key` column): exact sizes, nesting, disjoint validation, seed (in)dependence,
//! stratification, and errors that name the flag.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

fn prep() -> Command {
    Command::new(env!("CARGO_BIN_EXE_prep"))
}

/// Shard `shard` holds keys `from..to`; `source` is "web" for 70 % of keys, "book" otherwise.
fn write_shard(dir: &Path, shard: usize, from: usize, to: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("caption", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, true),
    ]));
    let keys: Vec<String> = (from..to).map(|i| format!("{i:08}")).collect();
    let caps: Vec<String> = (from..to).map(|i| format!("caption {i}")).collect();
    let src: Vec<&str> = (from..to)
        .map(|i| if i % 10 < 7 { "web" } else { "book" })
        .collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(keys)),
        Arc::new(StringArray::from_iter_values(caps)),
        Arc::new(StringArray::from_iter_values(src)),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let f = std::fs::File::create(dir.join(format!("data/part-{shard:05}.parquet"))).unwrap();
    let mut w = ArrowWriter::try_new(f, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// (index, key) of an index file.
fn read_index(p: &Path) -> Vec<(u64, String)> {
    let f = std::fs::File::open(p).unwrap();
    let r = ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for b in r {
        let b = b.unwrap();
        let idx = b
            .column_by_name("index")
            .unwrap()
            .as_primitive::<UInt64Type>()
            .clone();
        let key = b.column_by_name("key").unwrap().as_string::<i32>().clone();
        for i in 0..b.num_rows() {
            out.push((idx.value(i), key.value(i).to_string()));
        }
    }
    out
}

fn subset(ds: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = prep();
    c.arg("subset").arg(ds).arg("--out").arg(out).args(extra);
    c.output().unwrap()
}

fn keys(out: &Path, file: &str) -> HashSet<String> {
    read_index(&out.join(file))
        .into_iter()
        .map(|(_, k)| k)
        .collect()
}

#[test]
fn subsets_are_exact_nested_disjoint_and_seeded() {
    let t = tempfile::tempdir().unwrap();
    let ds = t.path().join("ds");
    write_shard(&ds, 0, 0, 1500);
    write_shard(&ds, 1, 1500, 3000);
    let args = ["--sizes", "100,1k,2k,all", "--val", "500", "--seed", "4"];
    let a = t.path().join("a");
    let o = subset(&ds, &a, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("subsets.json")).unwrap()).unwrap();
    assert_eq!(m["num_rows"], 3000);
    let rows: BTreeMap<String, u64> = m["splits"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["rows"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        rows,
        BTreeMap::from([
            ("val".into(), 500),
            ("100".into(), 100),
            ("1k".into(), 1000),
            ("2k".into(), 2000),
            ("all".into(), 2500)
        ])
    );
    // Index = position in data_files order; keys of this dataset are that position.
    for (i, k) in read_index(&a.join("train-1k.parquet")) {
        assert_eq!(format!("{i:08}"), k);
    }
    let val = keys(&a, "val.parquet");
    let chain = [
        "train-100.parquet",
        "train-1k.parquet",
        "train-2k.parquet",
        "train-all.parquet",
    ];
    for w in chain.windows(2) {
        assert!(
            keys(&a, w[0]).is_subset(&keys(&a, w[1])),
            "{} ⊄ {}",
            w[0],
            w[1]
        );
    }
    for f in chain {
        assert!(keys(&a, f).is_disjoint(&val), "{f} overlaps val");
    }
    assert_eq!(keys(&a, "train-all.parquet").len() + val.len(), 3000);
    // The rank thresholds describe the same split.
    let v = &m["splits"]["1k"];
    assert!(v["rank_min"].as_u64().unwrap() < v["rank_max"].as_u64().unwrap());

    // Same seed → byte-identical index files; another seed → a different subset.
    let b = t.path().join("b");
    assert!(subset(&ds, &b, &args).status.success());
    for f in chain.iter().chain(["val.parquet"].iter()) {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
    let c = t.path().join("c");
    let args5 = ["--sizes", "100,1k,2k,all", "--val", "500", "--seed", "5"];
    assert!(subset(&ds, &c, &args5).status.success());
    let overlap = keys(&a, "train-1k.parquet")
        .intersection(&keys(&c, "train-1k.parquet"))
        .count();
    assert!(overlap < 500, "seeds 4 and 5 share {overlap} of 1000 rows");
}

#[test]
fn stratified_subsets_keep_proportions() {
    let t = tempfile::tempdir().unwrap();
    let ds = t.path().join("ds");
    write_shard(&ds, 0, 0, 2000);
    let out = t.path().join("s");
    let o = subset(
        &ds,
        &out,
        &[
            "--sizes",
            "100,1k",
            "--val",
            "200",
            "--seed",
            "1",
            "--stratify",
            "source",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("subsets.json")).unwrap()).unwrap();
    for (name, k) in [("val", 200.0), ("100", 100.0), ("1k", 1000.0)] {
        let web = m["splits"][name]["strata"]["web"].as_f64().unwrap();
        let book = m["splits"][name]["strata"]["book"].as_f64().unwrap();
        assert_eq!(web + book, k);
        assert!((web - 0.7 * k).abs() <= 1.0, "{name}: web {web} of {k}");
    }
}

#[test]
fn errors_name_the_flag() {
    let t = tempfile::tempdir().unwrap();
    let ds = t.path().join("ds");
    write_shard(&ds, 0, 0, 100);
    let err = |extra: &[&str]| {
        let o = subset(&ds, &t.path().join("x"), extra);
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let e = err(&["--sizes", "1k", "--val", "10", "--seed", "0"]);
    assert!(
        e.contains("--sizes 1k: asks for 1000 training rows but only 90 remain"),
        "{e}"
    );
    let e = err(&[
        "--sizes",
        "10",
        "--val",
        "10",
        "--seed",
        "0",
        "--stratify",
        "nope",
    ]);
    assert!(e.contains("no column \"nope\" (--stratify)"), "{e}");
    let e = err(&["--sizes", "lots", "--seed", "0"]);
    assert!(e.contains("\"lots\" is not a size"), "{e}");
    let dup = t.path().join("dup");
    write_shard(&dup, 0, 0, 10);
    write_shard(&dup, 1, 5, 15);
    let o = subset(&dup, &t.path().join("y"), &["--sizes", "2", "--seed", "0"]);
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(e.contains("duplicate key \"00000005\""), "{e}");
    assert!(
        e.contains("part-00000.parquet row 5") && e.contains("part-00001.parquet row 0"),
        "{e}"
    );
    let o = subset(
        &t.path().join("missing"),
        &t.path().join("x"),
        &["--sizes", "1", "--seed", "0"],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("no data/ directory"));
}
