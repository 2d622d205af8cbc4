//! The data-lake tables a backup holds, column by column, and the moves
//! between PostgreSQL rows, Arrow arrays and Parquet bytes.
//!
//! Columns are listed explicitly (not discovered) so that a schema change
//! that forgets the backup fails its round-trip test instead of silently
//! dropping a column.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{ArrayRef, Float32Array, Int16Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    I64,
    I32,
    I16,
    F32,
    Text,
    Timestamp,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    /// The PostgreSQL type a text value is cast to on restore (uuid, jsonb,
    /// enums); `None` when the array's own type fits.
    pub cast: Option<&'static str>,
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column { name, kind, cast: None }
}

const fn cast(name: &'static str, kind: Kind, to: &'static str) -> Column {
    Column { name, kind, cast: Some(to) }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
    /// The primary key's columns.
    pub key: &'static [&'static str],
}

use Kind::*;

pub const LABEL_SETS: Table = Table { name: "label_sets", columns: &[col("name", Text), col("description", Text)], key: &["name"] };

pub const LABELS: Table = Table { name: "labels", columns: &[col("label_set", Text), col("position", I16), col("name", Text)], key: &["label_set", "name"] };

pub const STUDIES: Table = Table {
    name: "studies",
    columns: &[
        col("id", I64),
        cast("public_id", Text, "uuid"),
        col("owner", Text),
        cast("status", Text, "study_status"),
        col("s3_bucket", Text),
        col("s3_key", Text),
        col("media_type", Text),
        col("byte_size", I64),
        col("sha256", Text),
        col("width", I32),
        col("height", I32),
        col("bit_depth", I16),
        col("modality", Text),
        cast("dicom", Text, "jsonb"),
        col("failure", Text),
        col("created_at", Timestamp),
        col("updated_at", Timestamp),
        col("preview_key", Text),
        col("priority", F32),
        col("priority_label", Text),
    ],
    key: &["id"],
};

pub const INFERENCE_RUNS: Table = Table {
    name: "inference_runs",
    columns: &[
        col("id", I64),
        col("study_id", I64),
        col("model_name", Text),
        col("model_version", Text),
        cast("thresholds", Text, "jsonb"),
        cast("timings_ms", Text, "jsonb"),
        col("created_at", Timestamp),
        col("heatmap_key", Text),
        cast("model_trained", Text, "boolean"),
    ],
    key: &["id"],
};

pub const FINDINGS: Table = Table {
    name: "findings",
    columns: &[
        col("id", I64),
        col("inference_run_id", I64),
        col("label", Text),
        col("probability", F32),
        col("x_min", F32),
        col("y_min", F32),
        col("width", F32),
        col("height", F32),
        cast("source", Text, "finding_source"),
    ],
    key: &["id"],
};

pub const ANNOTATIONS: Table = Table {
    name: "annotations",
    columns: &[
        col("id", I64),
        col("study_id", I64),
        col("label_set", Text),
        col("label", Text),
        col("x_min", F32),
        col("y_min", F32),
        col("width", F32),
        col("height", F32),
        col("author", Text),
        col("created_at", Timestamp),
    ],
    key: &["id"],
};

pub const ANNOTATION_REVISIONS: Table = Table {
    name: "annotation_revisions",
    columns: &[
        col("id", I64),
        col("annotation_id", I64),
        col("study_id", I64),
        cast("change", Text, "annotation_change"),
        col("label_set", Text),
        col("label", Text),
        col("x_min", F32),
        col("y_min", F32),
        col("width", F32),
        col("height", F32),
        col("changed_by", Text),
        col("changed_at", Timestamp),
    ],
    key: &["id"],
};

/// Every table, parents before children (the order a restore loads them).
pub const ALL: [&Table; 7] = [&LABEL_SETS, &LABELS, &STUDIES, &INFERENCE_RUNS, &FINDINGS, &ANNOTATIONS, &ANNOTATION_REVISIONS];

impl Table {
    /// `SELECT` list: text casts for the types Arrow has no place for.
    pub fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| match c.cast {
                Some(_) => format!("{0}::text AS {0}", c.name),
                None => c.name.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn schema(&self) -> Arc<Schema> {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| {
                    let data_type = match c.kind {
                        I64 => DataType::Int64,
                        I32 => DataType::Int32,
                        I16 => DataType::Int16,
                        F32 => DataType::Float32,
                        Text => DataType::Utf8,
                        Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    };
                    Field::new(c.name, data_type, true)
                })
                .collect::<Vec<_>>(),
        ))
    }

    /// An `INSERT ... SELECT FROM UNNEST(...)` that upserts by primary key:
    /// one statement per part, every value a bound array parameter.
    pub fn upsert_statement(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name).collect();
        let arrays = self.columns.iter().enumerate().map(|(i, c)| format!("${}::{}[]", i + 1, array_type(c.kind))).collect::<Vec<_>>().join(", ");
        let values = self
            .columns
            .iter()
            .map(|c| match c.cast {
                Some(to) => format!("u.{0}::{to}", c.name),
                None => format!("u.{}", c.name),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let updates = self.columns.iter().filter(|c| !self.key.contains(&c.name)).map(|c| format!("{0} = EXCLUDED.{0}", c.name)).collect::<Vec<_>>().join(", ");
        let identity = if self.key == ["id"] { "OVERRIDING SYSTEM VALUE " } else { "" };
        format!(
            "INSERT INTO {table} ({cols}) {identity}SELECT {values} FROM UNNEST({arrays}) AS u({cols}) \
             ON CONFLICT ({key}) DO UPDATE SET {updates}",
            table = self.name,
            cols = names.join(", "),
            key = self.key.join(", "),
        )
    }
}

fn array_type(kind: Kind) -> &'static str {
    match kind {
        I64 => "bigint",
        I32 => "integer",
        I16 => "smallint",
        F32 => "real",
        Text => "text",
        Timestamp => "timestamptz",
    }
}

/// One column's values, typed.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    I64(Vec<Option<i64>>),
    I32(Vec<Option<i32>>),
    I16(Vec<Option<i16>>),
    F32(Vec<Option<f32>>),
    Text(Vec<Option<String>>),
    Timestamp(Vec<Option<OffsetDateTime>>),
}

#[derive(Debug, thiserror::Error)]
pub enum TableDataError {
    #[error("reading a row: {0}")]
    Row(#[from] sqlx::Error),
    #[error("Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("Arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("backup part of {table} does not match the schema: {reason}")]
    Shape { table: &'static str, reason: String },
}

/// The rows of one table (or part of one), column-wise.
#[derive(Clone, Debug, PartialEq)]
pub struct TableData {
    pub table: &'static Table,
    pub columns: Vec<Values>,
}

impl TableData {
    pub fn from_rows(table: &'static Table, rows: &[PgRow]) -> Result<Self, TableDataError> {
        let columns = table
            .columns
            .iter()
            .map(|c| {
                let n = c.name;
                Ok(match c.kind {
                    I64 => Values::I64(rows.iter().map(|r| r.try_get(n)).collect::<Result<_, _>>()?),
                    I32 => Values::I32(rows.iter().map(|r| r.try_get(n)).collect::<Result<_, _>>()?),
                    I16 => Values::I16(rows.iter().map(|r| r.try_get(n)).collect::<Result<_, _>>()?),
                    F32 => Values::F32(rows.iter().map(|r| r.try_get(n)).collect::<Result<_, _>>()?),
                    Text => Values::Text(rows.iter().map(|r| r.try_get(n)).collect::<Result<_, _>>()?),
                    Timestamp => Values::Timestamp(rows.iter().map(|r| r.try_get(n)).collect::<Result<_, _>>()?),
                })
            })
            .collect::<Result<_, TableDataError>>()?;
        Ok(Self { table, columns })
    }

    pub fn len(&self) -> usize {
        match self.columns.first() {
            Some(Values::I64(v)) => v.len(),
            Some(Values::I32(v)) => v.len(),
            Some(Values::I16(v)) => v.len(),
            Some(Values::F32(v)) => v.len(),
            Some(Values::Text(v)) => v.len(),
            Some(Values::Timestamp(v)) => v.len(),
            None => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `id` column, for tables keyed by it.
    pub fn ids(&self) -> Vec<i64> {
        match self.table.columns.iter().position(|c| c.name == "id").map(|i| &self.columns[i]) {
            Some(Values::I64(ids)) => ids.iter().flatten().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// A timestamp column's values by position (`None` for another kind).
    pub fn timestamps(&self, column: &str) -> Option<&[Option<OffsetDateTime>]> {
        match self.table.columns.iter().position(|c| c.name == column).map(|i| &self.columns[i]) {
            Some(Values::Timestamp(values)) => Some(values),
            _ => None,
        }
    }

    /// Parquet bytes (Snappy-compressed). The same rows always give the same
    /// bytes, so checksums compare runs.
    pub fn to_parquet(&self) -> Result<Bytes, TableDataError> {
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|v| -> ArrayRef {
                match v {
                    Values::I64(v) => Arc::new(Int64Array::from(v.clone())),
                    Values::I32(v) => Arc::new(Int32Array::from(v.clone())),
                    Values::I16(v) => Arc::new(Int16Array::from(v.clone())),
                    Values::F32(v) => Arc::new(Float32Array::from(v.clone())),
                    Values::Text(v) => Arc::new(StringArray::from(v.clone())),
                    Values::Timestamp(v) => Arc::new(
                        TimestampMicrosecondArray::from(v.iter().map(|t| t.map(|t| (t.unix_timestamp_nanos() / 1000) as i64)).collect::<Vec<_>>())
                            .with_timezone("UTC"),
                    ),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(self.table.schema(), arrays)?;
        let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let mut writer = ArrowWriter::try_new(Vec::new(), self.table.schema(), Some(properties))?;
        writer.write(&batch)?;
        Ok(Bytes::from(writer.into_inner()?))
    }

    pub fn from_parquet(table: &'static Table, bytes: Bytes) -> Result<Self, TableDataError> {
        let shape = |reason: String| TableDataError::Shape { table: table.name, reason };
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        let mut columns: Vec<Values> = table
            .columns
            .iter()
            .map(|c| match c.kind {
                I64 => Values::I64(Vec::new()),
                I32 => Values::I32(Vec::new()),
                I16 => Values::I16(Vec::new()),
                F32 => Values::F32(Vec::new()),
                Text => Values::Text(Vec::new()),
                Timestamp => Values::Timestamp(Vec::new()),
            })
            .collect();
        for batch in reader {
            let batch = batch?;
            // Backups written before a nullable column was appended to a
            // table (e.g. `inference_runs.heatmap_key`) lack it: its values
            // are NULL. Any other difference in shape is an error.
            let present = batch.schema().fields().len();
            let names_match = batch.schema().fields().iter().zip(table.columns).all(|(f, c)| f.name() == c.name);
            if present > table.columns.len() || present == 0 || !names_match {
                return Err(shape(format!("{present} columns, expected {} named as in the table", table.columns.len())));
            }
            let rows = batch.num_rows();
            for (i, (column, values)) in table.columns.iter().zip(columns.iter_mut()).enumerate() {
                if i >= present {
                    match values {
                        Values::I64(v) => v.extend(std::iter::repeat_n(None, rows)),
                        Values::I32(v) => v.extend(std::iter::repeat_n(None, rows)),
                        Values::I16(v) => v.extend(std::iter::repeat_n(None, rows)),
                        Values::F32(v) => v.extend(std::iter::repeat_n(None, rows)),
                        Values::Text(v) => v.extend(std::iter::repeat_n(None, rows)),
                        Values::Timestamp(v) => v.extend(std::iter::repeat_n(None, rows)),
                    }
                    continue;
                }
                let array = batch.column(i);
                let wrong = || shape(format!("column {} has type {}", column.name, array.data_type()));
                match values {
                    Values::I64(v) => v.extend(array.as_primitive_opt::<Int64Type>().ok_or_else(wrong)?.iter()),
                    Values::I32(v) => v.extend(array.as_primitive_opt::<Int32Type>().ok_or_else(wrong)?.iter()),
                    Values::I16(v) => v.extend(array.as_primitive_opt::<Int16Type>().ok_or_else(wrong)?.iter()),
                    Values::F32(v) => v.extend(array.as_primitive_opt::<Float32Type>().ok_or_else(wrong)?.iter()),
                    Values::Text(v) => v.extend(array.as_string_opt::<i32>().ok_or_else(wrong)?.iter().map(|s| s.map(str::to_owned))),
                    Values::Timestamp(v) => {
                        for micros in array.as_primitive_opt::<TimestampMicrosecondType>().ok_or_else(wrong)?.iter() {
                            v.push(
                                micros
                                    .map(|m| OffsetDateTime::from_unix_timestamp_nanos(i128::from(m) * 1000))
                                    .transpose()
                                    .map_err(|e| shape(e.to_string()))?,
                            );
                        }
                    }
                }
            }
        }
        Ok(Self { table, columns })
    }

    /// Binds every column as one array parameter of [`Table::upsert_statement`].
    pub async fn upsert(&self, connection: &mut sqlx::PgConnection) -> Result<u64, sqlx::Error> {
        let sql = self.table.upsert_statement();
        let mut query = sqlx::query(&sql);
        for values in &self.columns {
            query = match values {
                Values::I64(v) => query.bind(v),
                Values::I32(v) => query.bind(v),
                Values::I16(v) => query.bind(v),
                Values::F32(v) => query.bind(v),
                Values::Text(v) => query.bind(v),
                Values::Timestamp(v) => query.bind(v),
            };
        }
        Ok(query.execute(connection).await?.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_built_from_the_specs() {
        assert_eq!(LABELS.select_list(), "label_set, position, name");
        assert!(STUDIES.select_list().contains("public_id::text AS public_id"));
        let upsert = STUDIES.upsert_statement();
        assert!(upsert.starts_with("INSERT INTO studies (id, public_id,"), "{upsert}");
        assert!(upsert.contains("OVERRIDING SYSTEM VALUE"));
        assert!(upsert.contains("u.public_id::uuid"));
        assert!(upsert.contains("$17::timestamptz[]"));
        assert!(upsert.contains("ON CONFLICT (id) DO UPDATE SET public_id = EXCLUDED.public_id"));
        assert!(!LABELS.upsert_statement().contains("OVERRIDING"));
    }

    #[test]
    fn parquet_round_trip_is_exact_and_deterministic() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_763_790_000_123_456_000).expect("time");
        let data = TableData {
            table: &FINDINGS,
            columns: vec![
                Values::I64(vec![Some(1), Some(2)]),
                Values::I64(vec![Some(10), Some(10)]),
                Values::Text(vec![Some("Cardiomegaly".into()), Some("Effusion".into())]),
                Values::F32(vec![Some(0.1), Some(0.987_654_3)]),
                Values::F32(vec![None, Some(1.5)]),
                Values::F32(vec![None, Some(2.5)]),
                Values::F32(vec![None, Some(3.5)]),
                Values::F32(vec![None, Some(4.5)]),
                Values::Text(vec![Some("model".into()), Some("cam".into())]),
            ],
        };
        let bytes = data.to_parquet().expect("write");
        assert_eq!(bytes, data.to_parquet().expect("write again"), "same rows, same bytes");
        assert_eq!(TableData::from_parquet(&FINDINGS, bytes).expect("read"), data);

        let labels = TableData { table: &LABEL_SETS, columns: vec![Values::Text(vec![Some("a".into())]), Values::Text(vec![None])] };
        assert_eq!(TableData::from_parquet(&LABEL_SETS, labels.to_parquet().expect("write")).expect("read"), labels);

        let runs = TableData {
            table: &INFERENCE_RUNS,
            columns: vec![
                Values::I64(vec![Some(1)]),
                Values::I64(vec![Some(2)]),
                Values::Text(vec![Some("densenet".into())]),
                Values::Text(vec![Some("1".into())]),
                Values::Text(vec![Some("{}".into())]),
                Values::Text(vec![Some("{}".into())]),
                Values::Timestamp(vec![Some(t)]),
                Values::Text(vec![None]),
                Values::Text(vec![None]),
            ],
        };
        assert_eq!(TableData::from_parquet(&INFERENCE_RUNS, runs.to_parquet().expect("write")).expect("read"), runs);

        // A backup written before `heatmap_key` and `model_trained` existed reads with NULLs.
        const OLD_RUNS: Table = Table { name: "inference_runs", columns: INFERENCE_RUNS.columns.split_at(7).0, key: &["id"] };
        let old = TableData { table: &OLD_RUNS, columns: runs.columns[..7].to_vec() };
        assert_eq!(TableData::from_parquet(&INFERENCE_RUNS, old.to_parquet().expect("write")).expect("read"), runs);
    }

    #[test]
    fn a_part_of_another_table_is_refused() {
        let data = TableData { table: &LABEL_SETS, columns: vec![Values::Text(vec![Some("a".into())]), Values::Text(vec![None])] };
        let bytes = data.to_parquet().expect("write");
        assert!(matches!(TableData::from_parquet(&LABELS, bytes), Err(TableDataError::Shape { .. })));
    }
}
