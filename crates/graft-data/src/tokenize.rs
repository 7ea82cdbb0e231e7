//! Tokenization with the model's `tokenizer.json` (the Hugging Face `tokenizers` crate): truncation
//! to a maximum length, padding to the longest text of each batch, and id checks against the
//! model's vocabulary.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{EncodeInput, Encoding, Tokenizer, TruncationParams};

use crate::DataError;

pub struct TextTokenizer {
    tokenizer: Tokenizer,
    /// The `tokenizer.json` it was loaded from, named in errors.
    path: std::path::PathBuf,
    max_length: usize,
    vocab_size: usize,
}

/// A padded batch of token ids, row-major `[batch, seq_len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    pub batch: usize,
    pub seq_len: usize,
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
}

/// One tokenized text, unpadded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

/// A sentence given as words, tokenized: its tokens and the word each token belongs to (`None`
/// for special tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordTokens {
    pub tokens: Tokens,
    pub word_ids: Vec<Option<u32>>,
}

/// A text tokenized with where each token came from: its span in characters (`[start, end)`),
/// whether it is a special token, and whether it continues the word before it, as transformers'
/// token-classification pipeline decides: a word-piece tokenizer's `##` pieces (a token whose
/// text is not the span's), otherwise a token with no space before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpannedTokens {
    pub tokens: Tokens,
    pub offsets: Vec<(usize, usize)>,
    pub special: Vec<bool>,
    pub subword: Vec<bool>,
}

/// Runs `f`, turning a panic inside the tokenizers crate into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    crate::guard::catch(f).unwrap_or_else(|detail| {
        Err(
            format!("the tokenizer failed on this file (is it corrupt?) {detail}")
                .trim_end()
                .to_string(),
        )
    })
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; texts are truncated to `max_length` tokens (special tokens included)
    /// and ids must stay below `vocab_size`.
    pub fn from_file(path: &Path, max_length: usize, vocab_size: usize) -> Result<Self, DataError> {
        if !path.is_file() {
            return Err(DataError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let tokenizer_error = |message: String| DataError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        // The tokenizers crate panics on some malformed files (an `unwrap` in its decoders'
        // deserializer), so a panic is turned into an error naming the file.
        let mut tokenizer = guarded(|| Tokenizer::from_file(path).map_err(|e| e.to_string()))
            .map_err(tokenizer_error)?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| tokenizer_error(e.to_string()))?;
        tokenizer.with_padding(None);
        Ok(Self {
            tokenizer,
            path: path.to_path_buf(),
            max_length,
            vocab_size,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenizes texts (with `[CLS]`/`[SEP]` or whatever the tokenizer's post-processor adds).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Tokens>, DataError> {
        self.encode(texts, |text| EncodeInput::Single((*text).into()))
    }

    /// Tokenizes pairs of texts as one input each, as transformers' `tokenizer(a, b)` does: the
    /// family's pair template (`[CLS] a [SEP] b [SEP]`, `<s> a </s></s> b </s>`) with token
    /// types 0 then 1 where the family has them, truncated longest first to `max_length`.
    pub fn tokenize_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<Tokens>, DataError> {
        self.encode(pairs, |(a, b)| EncodeInput::Dual((*a).into(), (*b).into()))
    }

    /// The tokenizer for text given as words: a byte-level BPE (RoBERTa's, ModernBERT's) then
    /// marks every word as following a space, as transformers' token-classification recipe loads
    /// it (`add_prefix_space=True`); other tokenizers are unchanged. A token-classification run
    /// uses it for raw text too, so words are read the same way in training and prediction.
    pub fn for_words(&self) -> Self {
        fn prefix_spaces(pre: &mut PreTokenizerWrapper) {
            match pre {
                PreTokenizerWrapper::ByteLevel(byte_level) => byte_level.add_prefix_space = true,
                PreTokenizerWrapper::Sequence(sequence) => {
                    sequence.as_mut().iter_mut().for_each(prefix_spaces)
                }
                _ => {}
            }
        }
        let mut tokenizer = self.tokenizer.clone();
        if let Some(mut pre) = tokenizer.get_pre_tokenizer().cloned() {
            prefix_spaces(&mut pre);
            tokenizer.with_pre_tokenizer(Some(pre));
        }
        Self {
            tokenizer,
            path: self.path.clone(),
            max_length: self.max_length,
            vocab_size: self.vocab_size,
        }
    }

    /// The tokenizer as it reads text, to be saved beside a model (`tokenizer.json`).
    pub fn to_json(&self) -> Result<String, DataError> {
        self.tokenizer
            .to_string(true)
            .map_err(|e| DataError::Invalid(format!("{}: {e}", self.path.display())))
    }

    /// Tokenizes sentences given as words (`tokenizer(words, is_split_into_words=True)`),
    /// keeping each token's word.
    pub fn tokenize_words(&self, sentences: &[Vec<String>]) -> Result<Vec<WordTokens>, DataError> {
        let mut out = Vec::with_capacity(sentences.len());
        self.encode_with(
            sentences,
            |words| EncodeInput::Single(words.as_slice().into()),
            false,
            |encoding| {
                out.push(WordTokens {
                    tokens: tokens_of(&encoding),
                    word_ids: encoding.get_word_ids().to_vec(),
                })
            },
        )?;
        Ok(out)
    }

    /// Tokenizes texts keeping each token's span in characters of the text and whether it
    /// continues a word ([`SpannedTokens`]).
    pub fn tokenize_spans(&self, texts: &[&str]) -> Result<Vec<SpannedTokens>, DataError> {
        use tokenizers::models::ModelWrapper;
        let (word_aware, unknown) = match self.tokenizer.get_model() {
            ModelWrapper::WordPiece(m) => (
                !m.continuing_subword_prefix.is_empty(),
                Some(m.unk_token.clone()),
            ),
            ModelWrapper::BPE(m) => (
                m.continuing_subword_prefix
                    .as_ref()
                    .is_some_and(|p| !p.is_empty()),
                m.unk_token.clone(),
            ),
            _ => (false, None),
        };
        let unknown = unknown.and_then(|token| self.tokenizer.token_to_id(&token));
        let mut out = Vec::with_capacity(texts.len());
        let mut next = 0;
        self.encode_with(
            texts,
            |text| EncodeInput::Single((*text).into()),
            true,
            |encoding| {
                let text: Vec<char> = texts[next].chars().collect();
                next += 1;
                let span =
                    |a: usize, b: usize| -> &[char] { &text[a.min(text.len())..b.min(text.len())] };
                let subword = encoding
                    .get_offsets()
                    .iter()
                    .zip(encoding.get_tokens())
                    .zip(encoding.get_ids())
                    .map(|((&(start, end), token), &id)| {
                        if Some(id) == unknown {
                            false
                        } else if word_aware {
                            token.chars().count() != span(start, end).len()
                        } else {
                            start > 0 && !span(start - 1, start + 1).contains(&' ')
                        }
                    })
                    .collect();
                out.push(SpannedTokens {
                    tokens: tokens_of(&encoding),
                    offsets: encoding.get_offsets().to_vec(),
                    special: encoding
                        .get_special_tokens_mask()
                        .iter()
                        .map(|&m| m == 1)
                        .collect(),
                    subword,
                })
            },
        )?;
        Ok(out)
    }

    fn encode<'a, T>(
        &self,
        items: &'a [T],
        input: impl Fn(&'a T) -> EncodeInput<'a>,
    ) -> Result<Vec<Tokens>, DataError> {
        let mut tokens = Vec::with_capacity(items.len());
        self.encode_with(items, input, false, |encoding| {
            tokens.push(tokens_of(&encoding))
        })?;
        Ok(tokens)
    }

    /// Encodes `items` in chunks, checking every id, and hands each encoding to `keep`; with
    /// `char_offsets`, offsets count characters (as transformers reports them), not bytes.
    fn encode_with<'a, T>(
        &self,
        items: &'a [T],
        input: impl Fn(&'a T) -> EncodeInput<'a>,
        char_offsets: bool,
        mut keep: impl FnMut(Encoding),
    ) -> Result<(), DataError> {
        // In chunks: the tokenizers crate's encodings hold each token's string, offsets and masks
        // (some 80 bytes a token), so a whole data set at once would peak far above the ids kept.
        for chunk in items.chunks(TOKENIZE_CHUNK) {
            let inputs: Vec<EncodeInput> = chunk.iter().map(&input).collect();
            let encodings = guarded(|| {
                if char_offsets {
                    self.tokenizer.encode_batch_char_offsets(inputs, true)
                } else {
                    self.tokenizer.encode_batch(inputs, true)
                }
                .map_err(|e| e.to_string())
            })
            .map_err(|e| {
                DataError::Invalid(format!(
                    "tokenization with {} failed: {e}",
                    self.path.display()
                ))
            })?;
            for encoding in encodings {
                if let Some(&id) = encoding
                    .get_ids()
                    .iter()
                    .find(|&&id| id as usize >= self.vocab_size)
                {
                    return Err(DataError::TokenOutOfVocab {
                        id,
                        vocab_size: self.vocab_size,
                    });
                }
                keep(encoding);
            }
        }
        Ok(())
    }
}

fn tokens_of(encoding: &Encoding) -> Tokens {
    Tokens {
        ids: encoding.get_ids().to_vec(),
        type_ids: encoding.get_type_ids().to_vec(),
    }
}

/// Texts the tokenizers crate encodes at a time (in parallel within the chunk).
const TOKENIZE_CHUNK: usize = 1024;

impl TokenBatch {
    /// Pads `tokens` with id 0 to the longest of them.
    pub fn pad(tokens: &[&Tokens]) -> Self {
        Self::pad_to_multiple(tokens, 1, usize::MAX)
    }

    /// Pads `tokens` with id 0 to the longest of them rounded up to a multiple of `multiple`
    /// (as transformers' `pad_to_multiple_of`), but no further than `limit`, the longest a
    /// tokenized text can be, so that padded positions stay within the model's.
    pub fn pad_to_multiple(tokens: &[&Tokens], multiple: usize, limit: usize) -> Self {
        let batch = tokens.len();
        let longest = tokens.iter().map(|t| t.ids.len()).max().unwrap_or(0);
        let seq_len = Self::padded_length(longest, multiple, limit);
        let mut out = Self {
            batch,
            seq_len,
            input_ids: vec![0; batch * seq_len],
            token_type_ids: vec![0; batch * seq_len],
            attention_mask: vec![0; batch * seq_len],
        };
        for (row, t) in tokens.iter().enumerate() {
            let start = row * seq_len;
            for (i, (&id, &type_id)) in t.ids.iter().zip(&t.type_ids).enumerate() {
                out.input_ids[start + i] = id as i64;
                out.token_type_ids[start + i] = type_id as i64;
                out.attention_mask[start + i] = 1;
            }
        }
        out
    }

    /// The length [`pad_to_multiple`](Self::pad_to_multiple) pads a batch whose longest text has
    /// `longest` tokens to (at least 1).
    pub fn padded_length(longest: usize, multiple: usize, limit: usize) -> usize {
        let longest = longest.max(1);
        longest
            .next_multiple_of(multiple.max(1))
            .min(limit)
            .max(longest)
    }

    /// Whether any row is padded.
    pub fn has_padding(&self) -> bool {
        self.attention_mask.contains(&0)
    }

    /// `(input_ids, token_type_ids, attention_mask)` as `[batch, seq_len]` int tensors; the mask is
    /// `None` when no row is padded, so the model skips masking.
    pub fn to_tensors(
        &self,
        device: &Device,
    ) -> (Tensor<2, Int>, Tensor<2, Int>, Option<Tensor<2, Int>>) {
        let shape = [self.batch, self.seq_len];
        let tensor = |values: &Vec<i64>| {
            Tensor::<2, Int>::from_data(TensorData::new(values.clone(), shape), device)
        };
        (
            tensor(&self.input_ids),
            tensor(&self.token_type_ids),
            self.has_padding().then(|| tensor(&self.attention_mask)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_the_longest_with_a_mask() {
        let a = Tokens {
            ids: vec![101, 7, 102],
            type_ids: vec![0; 3],
        };
        let b = Tokens {
            ids: vec![101, 102],
            type_ids: vec![0; 2],
        };
        let batch = TokenBatch::pad(&[&a, &b]);
        assert_eq!((batch.batch, batch.seq_len), (2, 3));
        assert_eq!(batch.input_ids, vec![101, 7, 102, 101, 102, 0]);
        assert_eq!(batch.attention_mask, vec![1, 1, 1, 1, 1, 0]);
    }

    #[test]
    fn pads_to_a_multiple_within_the_limit() {
        let tokens = |n: usize| Tokens {
            ids: vec![5; n],
            type_ids: vec![0; n],
        };
        let (a, b) = (tokens(33), tokens(3));
        let padded = TokenBatch::pad_to_multiple(&[&a, &b], 32, 128);
        assert_eq!(padded.seq_len, 64);
        assert_eq!(padded.attention_mask[..64].iter().sum::<i64>(), 33);
        assert_eq!(padded.attention_mask[64..].iter().sum::<i64>(), 3);
        assert_eq!(padded.input_ids[33..64], [0; 31]);
        // Never past the limit, never shorter than the longest text.
        assert_eq!(TokenBatch::pad_to_multiple(&[&a], 32, 40).seq_len, 40);
        assert_eq!(TokenBatch::pad_to_multiple(&[&a], 32, 20).seq_len, 33);
        assert_eq!(TokenBatch::pad_to_multiple(&[&b], 0, 10).seq_len, 3);
        // A multiple of the length already pads nothing.
        assert!(!TokenBatch::pad_to_multiple(&[&tokens(32)], 32, 64).has_padding());
    }
}
