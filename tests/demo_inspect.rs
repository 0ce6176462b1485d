//! The README's first command: the bundled demo, then `prep inspect` and its grid.

mod common;

use common::*;

#[test]
fn demo_builds_offline_and_inspect_writes_a_sheet() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let cache = tmp.path().join("cache");
    let o = prep()
        .env("PREP_CACHE", &cache)
        .args([
            "build",
            "--source",
            "demo",
            "--condition",
            "color,keypose,seg,canny",
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let (rows, _) = read_rows(&out.join("data/part-00000.parquet"));
    assert!(
        rows.len() >= 4,
        "demo has at least 4 photos, got {}",
        rows.len()
    );
    assert!(rows.iter().all(|r| r.key.starts_with("demo/demo/")));
    assert!(rows
        .iter()
        .all(|r| !r.text.is_empty() && r.captions.len() >= 2));
    // At least one photo with a person (keypose drawn) and one without (all black).
    let lit = |r: &TestRow| {
        decode_rgb(&r.images["keypose"].0)
            .pixels()
            .filter(|p| p.0 != [0, 0, 0])
            .count()
    };
    let people: Vec<usize> = rows.iter().map(lit).collect();
    assert!(
        people.iter().any(|&n| n > 100),
        "a person is drawn: {people:?}"
    );
    assert!(
        people.contains(&0),
        "a photo without people stays black: {people:?}"
    );
    for r in &rows {
        let seg = decode_rgb(&r.images["seg"].0);
        let colours: std::collections::HashSet<[u8; 3]> = seg.pixels().map(|p| p.0).collect();
        assert!(
            colours.len() >= 2,
            "{}: label map with several classes",
            r.key
        );
        assert_eq!(decode_rgb(&r.images["image"].0).dimensions(), (512, 512));
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(m["complete"], true);
    assert_eq!(m["source"]["name"], "demo");

    let o = run_ok(&["inspect", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!("rows      {} in 1 shard(s), complete", rows.len())),
        "{text}"
    );
    assert!(text.contains("keypose") && text.contains("image"), "{text}");

    let grid = tmp.path().join("g.png");
    run_ok(&[
        "inspect",
        out.to_str().unwrap(),
        "--grid",
        grid.to_str().unwrap(),
        "--rows",
        "3",
    ]);
    let sheet = image::open(&grid).unwrap().into_rgb8();
    // 5 image columns (image + 4 conditions) × 3 rows of 256 px cells, 4 px gaps.
    assert_eq!(sheet.dimensions(), (5 * 256 + 6 * 4, 3 * 256 + 4 * 4));
    // The first cell is the first row's image, scaled to 256.
    let first = decode_rgb(&rows[0].images["image"].0);
    let a = sheet.get_pixel(4 + 128, 4 + 128).0;
    let b = first.get_pixel(256, 256).0;
    assert!(
        a.iter()
            .zip(b.iter())
            .all(|(x, y)| (*x as i32 - *y as i32).abs() < 40),
        "{a:?} vs {b:?}"
    );
}
