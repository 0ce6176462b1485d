//! The CLIP BPE tokenizer (Stable Diffusion's text tokenizer), built with the `tokenizers`
//! crate from the two files of a `tokenizer/` directory: `vocab.json` and `merges.txt`.
//!
//! It is configured as Hugging Face's `CLIPTokenizerFast` (the `tokenizer.json` that
//! `openai/clip-vit-large-patch14` ships), which equals OpenAI's `SimpleTokenizer` on text
//! that `ftfy` leaves unchanged:
//! - normalizer: NFC, runs of whitespace → one space, lower case;
//! - pre-tokenizer: CLIP's regex (`'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`,
//!   matches kept, the rest dropped), then the GPT-2 byte → unicode map;
//! - model: BPE with end-of-word suffix `</w>`, unknown token `<|endoftext|>`;
//! - `<|startoftext|>` (bos, 49406 in CLIP's vocab) + tokens + `<|endoftext|>` (eos, 49407),
//!   truncated to [`CONTEXT_LEN`] keeping the eos, padded with eos to [`CONTEXT_LEN`]
//!   (Stable Diffusion's `pad_token` is `<|endoftext|>`).
//!
//! The special tokens' ids are read from `vocab.json` (a vocabulary without them is an
//! error), so a toy vocabulary works the same way as CLIP's.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormSeq, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior,
    Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

/// CLIP's context length: every prompt becomes exactly this many ids.
pub const CONTEXT_LEN: usize = 77;
/// Beginning-of-text token.
pub const BOS_TOKEN: &str = "<|startoftext|>";
/// End-of-text token, also the padding and unknown token.
pub const EOS_TOKEN: &str = "<|endoftext|>";
/// CLIP's pre-tokenizer pattern (OpenAI's `SimpleTokenizer.pat` without the specials,
/// which are added tokens here).
const CLIP_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The CLIP tokenizer: prompts → `[i64; 77]` id rows.
pub struct ClipTokenizer {
    inner: Tokenizer,
    pub bos_id: u32,
    pub eos_id: u32,
}

impl ClipTokenizer {
    /// Load `tokenizer/` (vocab.json + merges.txt) from a pipeline directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_files(&dir.join("vocab.json"), &dir.join("merges.txt"))
    }

    /// Build from a CLIP `vocab.json` and `merges.txt` (the files of a diffusers
    /// `tokenizer/` folder; `merges.txt` may start with a `#version` line).
    pub fn from_files(vocab: &Path, merges: &Path) -> Result<Self> {
        for (p, what) in [(vocab, "vocab.json"), (merges, "merges.txt")] {
            if !p.is_file() {
                bail!(
                    "tokenizer: {} does not exist; a pipeline's tokenizer/ folder needs CLIP's {what} (diffusers/optimum export it)",
                    p.display()
                );
            }
        }
        let path_str = |p: &Path| {
            p.to_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("tokenizer: path {} is not UTF-8", p.display()))
        };
        let bpe = BPE::from_file(&path_str(vocab)?, &path_str(merges)?)
            .end_of_word_suffix("</w>".to_string())
            .unk_token(EOS_TOKEN.to_string())
            .build()
            .map_err(|e| {
                anyhow!(
                    "tokenizer: cannot read {} + {} as a BPE vocabulary: {e}",
                    vocab.display(),
                    merges.display()
                )
            })?;
        let vocab_map = bpe.get_vocab();
        let id = |tok: &str| {
            vocab_map.get(tok).copied().with_context(|| {
                format!(
                    "tokenizer: {} has no {tok:?} token; is it CLIP's vocab.json?",
                    vocab.display()
                )
            })
        };
        let bos_id = id(BOS_TOKEN)?;
        let eos_id = id(EOS_TOKEN)?;

        let mut tok = Tokenizer::new(bpe);
        let re = |e: &dyn std::fmt::Display| anyhow!("tokenizer: internal pattern error: {e}");
        tok.with_normalizer(Some(NormSeq::new(vec![
            NFC.into(),
            Replace::new(
                tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
                " ",
            )
            .map_err(|e| re(&e))?
            .into(),
            Lowercase.into(),
        ])))
        .map_err(|e| re(&e))?;
        tok.with_pre_tokenizer(Some(PreSeq::new(vec![
            Split::new(
                SplitPattern::Regex(CLIP_PATTERN.into()),
                SplitDelimiterBehavior::Removed,
                true,
            )
            .map_err(|e| re(&e))?
            .into(),
            ByteLevel::new(false, true, false).into(),
        ])));
        tok.with_post_processor(Some(
            RobertaProcessing::new((EOS_TOKEN.into(), eos_id), (BOS_TOKEN.into(), bos_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        tok.add_special_tokens(vec![
            AddedToken::from(BOS_TOKEN, true),
            AddedToken::from(EOS_TOKEN, true),
        ])
        .map_err(|e| re(&e))?;
        tok.with_truncation(Some(TruncationParams {
            max_length: CONTEXT_LEN,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| re(&e))?;
        tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(CONTEXT_LEN),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: eos_id,
            pad_type_id: 0,
            pad_token: EOS_TOKEN.into(),
        }));
        Ok(ClipTokenizer {
            inner: tok,
            bos_id,
            eos_id,
        })
    }

    /// Token ids of one prompt (bos … eos, padded with eos to 77).
    pub fn encode(&self, text: &str) -> Result<[i64; CONTEXT_LEN]> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| anyhow!("tokenizer: cannot tokenize {text:?}: {e}"))?;
        let ids = enc.get_ids();
        if ids.len() != CONTEXT_LEN {
            bail!(
                "tokenizer: {text:?} gave {} ids, expected {CONTEXT_LEN}",
                ids.len()
            );
        }
        let mut out = [0i64; CONTEXT_LEN];
        for (o, &i) in out.iter_mut().zip(ids) {
            *o = i64::from(i);
        }
        Ok(out)
    }

    /// Token ids of several prompts, one row each.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<[i64; CONTEXT_LEN]>> {
        texts.iter().map(|t| self.encode(t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> ClipTokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/generate/pipeline/tokenizer");
        ClipTokenizer::from_dir(&dir).unwrap()
    }

    /// Expected ids come from tests/reference/clip_tokenizer_ref.py (a port of OpenAI's
    /// SimpleTokenizer) on the fixture vocabulary:
    /// `python3 tests/reference/clip_tokenizer_ref.py --dir tests/fixtures/generate/pipeline/tokenizer "PROMPT"`.
    fn check(tok: &ClipTokenizer, text: &str, expect: &[i64]) {
        let ids = tok.encode(text).unwrap();
        let n = expect.len();
        assert_eq!(&ids[..n], expect, "prompt {text:?}");
        assert!(
            ids[n..].iter().all(|&i| i == 49407),
            "padding of {text:?}: {ids:?}"
        );
    }

    #[test]
    fn fixture_vocabulary_matches_the_reference() {
        let tok = fixture();
        assert_eq!((tok.bos_id, tok.eos_id), (49406, 49407));
        include!("../tests/fixtures/generate/tokenizer_expected.rs");
    }

    #[test]
    fn long_prompts_keep_the_end_token() {
        let tok = fixture();
        let long = "a red cat and a blue dog ".repeat(20);
        let ids = tok.encode(&long).unwrap();
        assert_eq!(ids[0], 49406);
        assert_eq!(ids[76], 49407);
        assert!(ids[1..76].iter().all(|&i| i != 49407));
        let b = tok.encode_batch(&["a cat", &long]).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[1], ids);
    }

    #[test]
    fn missing_files_name_the_path() {
        let e = ClipTokenizer::from_dir(Path::new("/nonexistent/tokenizer"))
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("/nonexistent/tokenizer/vocab.json"),
            "{e}"
        );
    }

    /// CLIP's real vocabulary (49408 tokens), when `PREP_CLIP_TOKENIZER` names a folder with
    /// its vocab.json + merges.txt (scripts/test makes one from the open_clip wheel).
    #[test]
    fn real_clip_vocabulary() {
        let Some(dir) = std::env::var_os("PREP_CLIP_TOKENIZER") else {
            eprintln!("PREP_CLIP_TOKENIZER not set: real CLIP vocabulary check skipped");
            return;
        };
        let tok = ClipTokenizer::from_dir(Path::new(&dir)).unwrap();
        assert_eq!((tok.bos_id, tok.eos_id), (49406, 49407));
        check(
            &tok,
            "a photo of a cat",
            &[49406, 320, 1125, 539, 320, 2368, 49407],
        );
        let expect = Path::new(&dir).join("expected.json");
        if let Ok(text) = std::fs::read_to_string(&expect) {
            let cases: Vec<(String, Vec<i64>)> = serde_json::from_str(&text).unwrap();
            assert!(!cases.is_empty());
            for (prompt, ids) in cases {
                assert_eq!(
                    tok.encode(&prompt).unwrap().to_vec(),
                    ids,
                    "prompt {prompt:?}"
                );
            }
        }
    }
}
