//! The enrich stage: ids and times. Each log gets a UUIDv7 (time-ordered, so the store's newest-first
//! order and id order agree), and its times are cut to the microsecond, the precision API.md prints and
//! PostgreSQL keeps, so what is read back equals what was acknowledged.

use chrono::SubsecRound;
use uuid::Uuid;

use crate::request::{Ingest, IngestError};
use crate::stage::{Stage, StageLayer};

pub struct Enrich;

impl Enrich {
    pub fn layer() -> StageLayer<Enrich> {
        StageLayer::new(Enrich)
    }
}

#[async_trait::async_trait]
impl Stage for Enrich {
    const NAME: &'static str = "enrich";

    async fn apply(&self, request: &mut Ingest) -> Result<(), IngestError> {
        let received_at = request.received_at.trunc_subsecs(6);
        for record in &mut request.records {
            record.id = Uuid::now_v7();
            record.received_at = received_at;
            record.timestamp = record.timestamp.trunc_subsecs(6);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Timelike;
    use serde_json::json;

    use super::*;
    use crate::request::Protocol;
    use crate::validate::{Validate, ValidateConfig};

    #[tokio::test]
    async fn ids_are_unique_v7_and_times_are_microseconds() {
        let mut request = Ingest::new("r".into(), Protocol::Http, None, vec![]);
        request.records = Validate::new(ValidateConfig::default())
            .check(
                vec![
                    json!({"message": "a", "timestamp": "2026-11-27T08:00:00.123456789Z"}).into(),
                    json!({"message": "b"}).into(),
                ],
                Uuid::nil(),
                request.received_at,
            )
            .expect("valid");
        Enrich.apply(&mut request).await.expect("enriched");
        let [a, b] = [&request.records[0], &request.records[1]];
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.get_version_num(), 7);
        assert!(a.id < b.id, "v7 ids follow request order");
        assert_eq!(a.timestamp.nanosecond() % 1000, 0);
        assert_eq!(a.timestamp.nanosecond(), 123_456_000);
        assert_eq!(b.received_at.nanosecond() % 1000, 0);
    }
}
