//! Deterministic output: the same model and prompt always get the same reply, so tests can
//! assert on text, labels and token counts.

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// The simulator's tokenizer: about four characters a token, as the providers' guidance puts
/// it for English. Not a real BPE; consistent is what matters here.
pub fn tokens(text: &str) -> u32 {
    let chars = text.chars().count() as u32;
    chars.div_ceil(4)
}

/// A small, seeded generator (SplitMix64): portable and stable across Rust releases, unlike
/// `DefaultHasher`, so a prompt's reply never changes with the toolchain.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded by SHA-256 of the parts, in order.
    pub fn for_prompt(parts: &[&str]) -> Rng {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        let digest = hasher.finalize();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&digest[..8]);
        Rng(u64::from_le_bytes(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

const WORDS: &[&str] = &[
    "the",
    "router",
    "queue",
    "model",
    "signal",
    "result",
    "switch",
    "yard",
    "train",
    "track",
    "cargo",
    "engine",
    "fast",
    "steady",
    "batch",
    "stream",
    "token",
    "budget",
    "latency",
    "answer",
    "clear",
    "brief",
    "summary",
    "detail",
    "system",
    "worker",
    "request",
    "reply",
    "ledger",
    "metric",
    "value",
    "order",
    "ready",
    "green",
    "amber",
    "signal",
    "points",
    "junction",
    "line",
    "freight",
    "schedule",
    "platform",
    "coupling",
    "siding",
    "yardmaster",
    "manifest",
    "route",
    "priority",
    "realtime",
    "standard",
    "deliver",
    "webhook",
    "event",
    "replay",
    "shard",
    "partition",
    "offset",
    "commit",
    "lease",
    "retry",
    "backoff",
    "jitter",
    "deadline",
    "quota",
];

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The reply ended naturally.
    Natural,
    /// `max_tokens` cut it.
    Length,
    /// One of the stop sequences matched; the index into them.
    Sequence(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    pub text: String,
    pub stop: Stop,
}

/// Prose of about `natural` tokens, never more than `max_tokens`, cut at the first stop
/// sequence.
pub fn prose(rng: &mut Rng, natural: u32, max_tokens: u32, stops: &[String]) -> Generated {
    let mut text = String::new();
    let mut stop = Stop::Natural;
    loop {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        let before = text.len();
        if text.is_empty() {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                text.extend(first.to_uppercase());
                text.push_str(chars.as_str());
            }
        } else {
            text.push(' ');
            text.push_str(word);
        }
        if tokens(&text) > max_tokens {
            text.truncate(before);
            stop = Stop::Length;
            break;
        }
        if tokens(&text) >= natural {
            break;
        }
    }
    if stop == Stop::Natural && tokens(&text) < max_tokens {
        text.push('.');
    }
    let earliest = stops
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .filter_map(|(index, s)| text.find(s.as_str()).map(|at| (at, index)))
        .min();
    if let Some((at, index)) = earliest {
        text.truncate(at);
        stop = Stop::Sequence(index);
    }
    Generated { text, stop }
}

/// A value that satisfies the common subset of JSON Schema that structured outputs use
/// (objects with properties, arrays, enums, strings, numbers, booleans). Enums pick
/// deterministically, so a classifier's label is stable per prompt.
pub fn from_schema(rng: &mut Rng, schema: &Value) -> Value {
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.is_empty()
    {
        return options[rng.below(options.len() as u64) as usize].clone();
    }
    if let Some(constant) = schema.get("const") {
        return constant.clone();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let mut object = Map::new();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    object.insert(name.clone(), from_schema(rng, property));
                }
            }
            Value::Object(object)
        }
        Some("array") => {
            let item = schema.get("items").cloned().unwrap_or(Value::Null);
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(1);
            Value::Array((0..min.max(1)).map(|_| from_schema(rng, &item)).collect())
        }
        Some("integer") => Value::from(rng.below(10)),
        Some("number") => Value::from(rng.below(100) as f64 / 100.0),
        Some("boolean") => Value::Bool(rng.below(2) == 1),
        Some("null") => Value::Null,
        _ => Value::String(prose(rng, 6, 8, &[]).text),
    }
}

/// A classification prompt in the plain-text form clients use without structured outputs: a
/// line `Labels:` followed by `- label` lines. The labels it lists, if any.
pub fn listed_labels(prompt: &str) -> Vec<String> {
    let mut lines = prompt.lines().skip_while(|line| line.trim() != "Labels:");
    if lines.next().is_none() {
        return Vec::new();
    }
    lines
        .map(str::trim)
        .take_while(|line| line.starts_with("- "))
        .map(|line| line[2..].trim().to_owned())
        .filter(|label| !label.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_prompt_same_reply_other_prompt_other_reply() {
        let a = prose(&mut Rng::for_prompt(&["m", "hello"]), 12, 100, &[]);
        let b = prose(&mut Rng::for_prompt(&["m", "hello"]), 12, 100, &[]);
        let c = prose(&mut Rng::for_prompt(&["m", "hullo"]), 12, 100, &[]);
        assert_eq!(a, b);
        assert_ne!(a.text, c.text);
        assert_eq!(a.stop, Stop::Natural);
        assert!((12..=16).contains(&tokens(&a.text)), "{a:?}");
    }

    #[test]
    fn max_tokens_and_stop_sequences_cut_the_reply() {
        let cut = prose(&mut Rng::for_prompt(&["p"]), 50, 5, &[]);
        assert_eq!(cut.stop, Stop::Length);
        assert!(tokens(&cut.text) <= 5 && !cut.text.is_empty(), "{cut:?}");
        let full = prose(&mut Rng::for_prompt(&["p"]), 50, 50, &[]);
        let third = full.text.split(' ').nth(2).unwrap().to_owned();
        let stopped = prose(
            &mut Rng::for_prompt(&["p"]),
            50,
            50,
            &["zzz".to_owned(), format!(" {third}")],
        );
        assert_eq!(stopped.stop, Stop::Sequence(1));
        assert!(full.text.starts_with(&stopped.text));
        assert!(!stopped.text.contains(&format!(" {third}")));
    }

    #[test]
    fn schema_values_conform() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"labels": {"type": "array", "items": {"enum": ["spam", "ham"]}}},
        });
        let value = from_schema(&mut Rng::for_prompt(&["x"]), &schema);
        let label = value["labels"][0].as_str().unwrap();
        assert!(["spam", "ham"].contains(&label), "{value}");
    }

    #[test]
    fn finds_listed_labels() {
        let prompt = "Classify this.\nLabels:\n- billing\n- tech support\n\nText: hi";
        assert_eq!(listed_labels(prompt), ["billing", "tech support"]);
        assert!(listed_labels("no labels here").is_empty());
    }

    #[test]
    fn tokens_are_about_four_chars() {
        assert_eq!((tokens(""), tokens("abcd"), tokens("abcde")), (0, 1, 2));
    }
}
