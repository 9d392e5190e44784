//! Schemas of the words the API takes as text (a symbol, a feature spec, a
//! job state, a priority, a time), for `/openapi.json`. Each is built from
//! the code that checks the word (its pattern, its bound, the list of its
//! values), so the document says exactly what the handlers accept.
//!
//! A feature spec and a time have rules a pattern cannot hold (`macd`'s
//! fast below its slow, a time within the nanosecond range): their schemas
//! name a format of their own (`kiln-feature-spec`, `kiln-feature-list`,
//! `kiln-time`), explained in their descriptions, that a client generator
//! or a fuzzer can be taught.

use std::borrow::Cow;

use kiln_core::{JobState, Priority, SYMBOL_BYTES_MAX};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::features::spec::KNOWN_NAMES;

/// A text schema.
fn text() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// A market symbol: 1 to 32 bytes of `A-Z a-z 0-9 . _ : -`.
pub struct SymbolName;

impl PartialSchema for SymbolName {
    fn schema() -> RefOr<Schema> {
        text()
            .description(Some("A market symbol: 1 to 32 of A-Z a-z 0-9 . _ : -"))
            .pattern(Some(format!("^[A-Za-z0-9._:-]{{1,{SYMBOL_BYTES_MAX}}}$")))
            .min_length(Some(1))
            .max_length(Some(SYMBOL_BYTES_MAX))
            .examples(["AAPL"])
            .into()
    }
}

impl ToSchema for SymbolName {
    fn name() -> Cow<'static, str> {
        "Symbol".into()
    }
}

/// A job's state.
pub struct StateName;

impl PartialSchema for StateName {
    fn schema() -> RefOr<Schema> {
        text()
            .description(Some("A job's state"))
            .enum_values(Some(JobState::ALL.iter().map(|s| s.as_str())))
            .into()
    }
}

impl ToSchema for StateName {
    fn name() -> Cow<'static, str> {
        "JobState".into()
    }
}

/// A priority.
pub struct PriorityName;

impl PartialSchema for PriorityName {
    fn schema() -> RefOr<Schema> {
        text()
            .description(Some("A job's priority"))
            .enum_values(Some(Priority::ALL.iter().map(|p| p.as_str())))
            .into()
    }
}

impl ToSchema for PriorityName {
    fn name() -> Cow<'static, str> {
        "Priority".into()
    }
}

/// The description of a feature spec: its grammar and the names it knows.
fn spec_grammar() -> String {
    format!(
        "A feature spec, format kiln-feature-spec: a name and its parameters, such as rsi(14), \
         macd(12,26,9) (fast < slow) or bbands(20,2) (k finite and > 0); periods are integers \
         1 to {} (volatility: from 2); trange, logret and obv take none. Known names: {}.",
        crate::features::spec::PERIOD_MAX,
        KNOWN_NAMES.join(", ")
    )
}

/// One feature spec (`rsi(14)`), or, where a series is read, one output of
/// one (`macd(12,26,9).signal`).
pub struct FeatureSpecText;

impl PartialSchema for FeatureSpecText {
    fn schema() -> RefOr<Schema> {
        text()
            .description(Some(spec_grammar()))
            .format(Some(SchemaFormat::Custom("kiln-feature-spec".into())))
            .min_length(Some(1))
            .examples(["rsi(14)"])
            .into()
    }
}

impl ToSchema for FeatureSpecText {
    fn name() -> Cow<'static, str> {
        "FeatureSpec".into()
    }
}

/// Most specs a list may name: each has at most three outputs, and a
/// request names at most [`super::OUTPUTS_MAX`].
const SPECS_MAX: usize = super::OUTPUTS_MAX / 3;

/// Feature specs as one comma-separated text or as an array.
pub struct FeatureList;

impl PartialSchema for FeatureList {
    fn schema() -> RefOr<Schema> {
        let joined = text()
            .description(Some(format!(
                "Feature specs separated by commas, format kiln-feature-list \
                 (rsi(14),macd(12,26,9)); at most {} outputs",
                super::OUTPUTS_MAX
            )))
            .format(Some(SchemaFormat::Custom("kiln-feature-list".into())))
            .min_length(Some(1));
        let array = ArrayBuilder::new()
            .items(FeatureSpecText::schema())
            .min_items(Some(1))
            .max_items(Some(SPECS_MAX));
        OneOfBuilder::new()
            .item(joined)
            .item(array)
            .description(Some(format!(
                "Feature specs (at most {} outputs in all)",
                super::OUTPUTS_MAX
            )))
            .into()
    }
}

impl ToSchema for FeatureList {
    fn name() -> Cow<'static, str> {
        "FeatureList".into()
    }
}

const TIME_TEXT: &str = "A time, format kiln-time: YYYY-MM-DD or \
                         YYYY-MM-DDTHH:MM:SS[.f][Z|±HH:MM] (UTC without an offset), \
                         between 1677-09-22 and 2262-04-11";

/// A time as text.
pub struct TimeText;

impl PartialSchema for TimeText {
    fn schema() -> RefOr<Schema> {
        text()
            .description(Some(TIME_TEXT))
            .format(Some(SchemaFormat::Custom("kiln-time".into())))
            .examples(["2024-01-02"])
            .into()
    }
}

impl ToSchema for TimeText {
    fn name() -> Cow<'static, str> {
        "Time".into()
    }
}

/// A time in a JSON body: text, or epoch nanoseconds.
pub struct TimeValue;

impl PartialSchema for TimeValue {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(TimeText::schema())
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int64,
                    )))
                    .description(Some("Epoch nanoseconds")),
            )
            .into()
    }
}

impl ToSchema for TimeValue {
    fn name() -> Cow<'static, str> {
        "TimeValue".into()
    }
}

/// A filter's value: a value, or empty for none.
fn filter(schema: ObjectBuilder, what: &str) -> RefOr<Schema> {
    schema
        .description(Some(format!("{what}; empty: any")))
        .into()
}

/// A filter on a job's state.
pub struct StateFilter;

impl PartialSchema for StateFilter {
    fn schema() -> RefOr<Schema> {
        let states = std::iter::once("").chain(JobState::ALL.iter().map(|s| s.as_str()));
        filter(text().enum_values(Some(states)), "A job's state")
    }
}

impl ToSchema for StateFilter {}

/// A filter on a job's priority.
pub struct PriorityFilter;

impl PartialSchema for PriorityFilter {
    fn schema() -> RefOr<Schema> {
        let names = std::iter::once("").chain(Priority::ALL.iter().map(|p| p.as_str()));
        filter(text().enum_values(Some(names)), "A job's priority")
    }
}

impl ToSchema for PriorityFilter {}

/// A filter on a job's symbols.
pub struct SymbolFilter;

impl PartialSchema for SymbolFilter {
    fn schema() -> RefOr<Schema> {
        filter(
            text()
                .pattern(Some(format!(
                    "^([A-Za-z0-9._:-]{{1,{SYMBOL_BYTES_MAX}}})?$"
                )))
                .max_length(Some(SYMBOL_BYTES_MAX)),
            "A symbol the job covers",
        )
    }
}

impl ToSchema for SymbolFilter {}

/// A whole number from 0 to 2^64 - 1 (an id, a sequence number, a count),
/// as the handlers read it.
pub struct Whole;

impl PartialSchema for Whole {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(u64::MAX))
            .into()
    }
}

impl ToSchema for Whole {}
