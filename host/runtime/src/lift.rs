//! Guest strings and lists measured in guest memory: a length is checked before a single byte is copied to the host.
//!
//! wasmtime lifts a `string` by copying it whole (bounded only by its
//! per-call "hostcall fuel", 128 MiB), and `WasmStr` cannot be read after
//! a typed call returns: the guest's post-return function has freed the
//! string by then, and its allocator may have reused the bytes. So the
//! types here implement the canonical ABI's lift themselves: they read the
//! pointer and length, check them against guest memory as wasmtime does,
//! and copy only what fits a cap. Everything else (discriminants, records,
//! enums) is still lifted by wasmtime.

use std::borrow::Cow;

use wasmtime::StoreContext;
use wasmtime::ValRaw;
use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift, WasmStr};
use wasmtime::{bail, format_err};

use crate::wit::latest as wit;

tokio::task_local! {
    /// The output cap of the call being lifted. A lift has no access to
    /// the store's data, but it runs on the call's fiber inside the poll of
    /// the call's future, so a task-local set around that future reaches it.
    pub(crate) static OUTPUT_CAP: u64;
}

/// The longest agent error message kept; the rest is cut and its length noted.
pub const MAX_AGENT_MESSAGE: usize = 16 << 10;

/// Where a string lies in guest memory, checked as wasmtime checks it.
#[derive(Clone, Copy)]
struct Span {
    ptr: usize,
    bytes: usize,
    utf8: bool,
}

impl Span {
    fn from_flat(cx: &LiftContext<'_>, src: &[ValRaw; 2]) -> wasmtime::Result<Self> {
        Self::new(cx, src[0].get_u32() as usize, src[1].get_u32() as usize)
    }

    fn from_memory(cx: &LiftContext<'_>, bytes: &[u8]) -> wasmtime::Result<Self> {
        let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        Self::new(cx, word(0), word(4))
    }

    /// The canonical ABI's length is in code units of the string encoding.
    fn new(cx: &LiftContext<'_>, ptr: usize, len: usize) -> wasmtime::Result<Self> {
        const UTF16_TAG: usize = 1 << 31;
        let encoding = cx.options().string_encoding;
        let (bytes, align) = match encoding {
            StringEncoding::Utf8 => (Some(len), 1),
            StringEncoding::Utf16 => (len.checked_mul(2), 2),
            StringEncoding::CompactUtf16 if len & UTF16_TAG == 0 => (Some(len), 2),
            StringEncoding::CompactUtf16 => ((len ^ UTF16_TAG).checked_mul(2), 2),
        };
        if !ptr.is_multiple_of(align) {
            bail!("string pointer {ptr:#x} is not aligned to {align}");
        }
        match bytes.and_then(|b| Some((b, ptr.checked_add(b)?))) {
            Some((bytes, end)) if end <= cx.memory().len() => Ok(Self {
                ptr,
                bytes,
                utf8: matches!(encoding, StringEncoding::Utf8),
            }),
            _ => bail!(
                "string at {ptr:#x} of length {len} lies outside guest memory ({} bytes)",
                cx.memory().len()
            ),
        }
    }

    fn raw<'a>(&self, cx: &LiftContext<'a>) -> &'a [u8] {
        &cx.memory()[self.ptr..][..self.bytes]
    }
}

/// Implements `ComponentType` for a type that the WIT declares as `string`.
macro_rules! string_type {
    ($t:ty) => {
        unsafe impl ComponentType for $t {
            type Lower = [ValRaw; 2];
            const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;
            fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
                <WasmStr as ComponentType>::typecheck(ty, types)
            }
        }
    };
}

/// A string type lifted by its own `lift(cx, span, copy)`: it sees the
/// string's span in guest memory first, and calls `copy` (wasmtime's own
/// lift) only for what it keeps.
macro_rules! capped_string_lift {
    ($t:ty) => {
        unsafe impl Lift for $t {
            fn linear_lift_from_flat(
                cx: &mut LiftContext<'_>,
                ty: InterfaceType,
                src: &Self::Lower,
            ) -> wasmtime::Result<Self> {
                let span = Span::from_flat(cx, src)?;
                Self::lift(cx, span, |cx| String::linear_lift_from_flat(cx, ty, src))
            }

            fn linear_lift_from_memory(
                cx: &mut LiftContext<'_>,
                ty: InterfaceType,
                bytes: &[u8],
            ) -> wasmtime::Result<Self> {
                let span = Span::from_memory(cx, bytes)?;
                Self::lift(cx, span, |cx| {
                    String::linear_lift_from_memory(cx, ty, bytes)
                })
            }
        }
    };
}

/// A string a guest passes to a host call, left in guest memory: its byte
/// length is known at once, its text is read only when it is kept.
pub(crate) struct GuestStr {
    pub bytes: usize,
    text: WasmStr,
}

impl GuestStr {
    /// The text, borrowed from guest memory when it is UTF-8.
    pub fn read<'a, T: 'static>(
        &self,
        store: impl Into<StoreContext<'a, T>>,
    ) -> wasmtime::Result<Cow<'a, str>> {
        self.text.to_str(store)
    }
}

string_type!(GuestStr);

unsafe impl Lift for GuestStr {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        let span = Span::from_flat(cx, src)?;
        let text = WasmStr::linear_lift_from_flat(cx, ty, src)?;
        Ok(Self {
            bytes: span.bytes,
            text,
        })
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let span = Span::from_memory(cx, bytes)?;
        let text = WasmStr::linear_lift_from_memory(cx, ty, bytes)?;
        Ok(Self {
            bytes: span.bytes,
            text,
        })
    }
}

/// The `list<tuple<string, string>>` of a log record: its length, and the
/// first `MAX_LOG_FIELDS` entries. Entries past those are never read, so a
/// list of a million fields costs the host the same as one of 65.
pub(crate) struct LogFields {
    pub count: usize,
    pub first: Vec<(GuestStr, GuestStr)>,
}

type Field = (GuestStr, GuestStr);

unsafe impl ComponentType for LogFields {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;
    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[Field] as ComponentType>::typecheck(ty, types)
    }
}

impl LogFields {
    fn lift(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        ptr: usize,
        count: usize,
    ) -> wasmtime::Result<Self> {
        let elem = match ty {
            InterfaceType::List(i) => cx.types[i].element,
            _ => bail!("log fields are not a list"),
        };
        let size = <Field as ComponentType>::SIZE32;
        let align = <Field as ComponentType>::ALIGN32 as usize;
        let memory = cx.memory();
        match count.checked_mul(size).and_then(|b| ptr.checked_add(b)) {
            Some(end) if end <= memory.len() => {}
            _ => bail!("log fields at {ptr:#x} ({count} entries) lie outside guest memory"),
        }
        if !ptr.is_multiple_of(align) {
            bail!("log fields pointer {ptr:#x} is not aligned to {align}");
        }
        let read = count.min(crate::capture::MAX_LOG_FIELDS);
        let mut first = Vec::with_capacity(read);
        for i in 0..read {
            let bytes = &memory[ptr + i * size..][..size];
            first.push(Field::linear_lift_from_memory(cx, elem, bytes)?);
        }
        Ok(Self { count, first })
    }
}

unsafe impl Lift for LogFields {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        Self::lift(cx, ty, src[0].get_u32() as usize, src[1].get_u32() as usize)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        Self::lift(cx, ty, word(0), word(4))
    }
}

/// The string `run` returns: copied when it fits the call's output cap,
/// otherwise only measured.
pub(crate) enum OutputText {
    Text(String),
    TooLarge { bytes: u64 },
}

string_type!(OutputText);

impl OutputText {
    fn lift(
        cx: &mut LiftContext<'_>,
        span: Span,
        copy: impl FnOnce(&mut LiftContext<'_>) -> wasmtime::Result<String>,
    ) -> wasmtime::Result<Self> {
        let cap = OUTPUT_CAP
            .try_with(|cap| *cap)
            .map_err(|_| format_err!("the host lifted an output outside a call (no output cap)"))?;
        if span.bytes as u64 > cap {
            return Ok(Self::TooLarge {
                bytes: span.bytes as u64,
            });
        }
        if span.utf8 {
            let text = std::str::from_utf8(span.raw(cx))
                .map_err(|e| format_err!("the output is not valid UTF-8: {e}"))?;
            return Ok(Self::Text(text.to_owned()));
        }
        // UTF-16 guests: wasmtime transcodes (at most `cap` code units).
        copy(cx).map(Self::Text)
    }
}

capped_string_lift!(OutputText);

/// An agent error's message, cut at [`MAX_AGENT_MESSAGE`] bytes.
pub(crate) struct AgentMessage(pub String);

string_type!(AgentMessage);

impl AgentMessage {
    fn lift(
        cx: &mut LiftContext<'_>,
        span: Span,
        copy: impl FnOnce(&mut LiftContext<'_>) -> wasmtime::Result<String>,
    ) -> wasmtime::Result<Self> {
        if !span.utf8 {
            let mut text = copy(cx)?;
            cut(&mut text, span.bytes);
            return Ok(Self(text));
        }
        let raw = span.raw(cx);
        let kept = &raw[..raw.len().min(MAX_AGENT_MESSAGE)];
        let text = match std::str::from_utf8(kept) {
            Ok(text) => text,
            // The cut fell inside a character: keep what precedes it.
            Err(e) if kept.len() < raw.len() && e.error_len().is_none() => {
                std::str::from_utf8(&kept[..e.valid_up_to()]).expect("valid up to here")
            }
            Err(e) => bail!("the agent error's message is not valid UTF-8: {e}"),
        };
        let mut text = text.to_owned();
        if kept.len() < raw.len() {
            text.push_str(&format!("… (cut; {} bytes in all)", raw.len()));
        }
        Ok(Self(text))
    }
}

fn cut(text: &mut String, total: usize) {
    if text.len() > MAX_AGENT_MESSAGE {
        let mut end = MAX_AGENT_MESSAGE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(&format!("… (cut; {total} bytes in all)"));
    }
}

capped_string_lift!(AgentMessage);

/// The contract's `agent-error`, with its message bounded.
#[derive(ComponentType, Lift)]
#[component(record)]
pub(crate) struct RawAgentError {
    pub class: wit::corral::agent::types::ErrorClass,
    pub message: AgentMessage,
}

/// What `run` returns, lifted under the caps above.
pub(crate) type RunResult = Result<OutputText, RawAgentError>;
