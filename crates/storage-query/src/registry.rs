//! `sys_service` and `sys_deployment`: the schema registry as this node last read it.

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;

use crate::invocations::service_type_name;
use crate::rows::{Rows, schema, timestamp};
use crate::table::{Cursor, Scan, Source, SysTable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegistryTable {
    Service,
    Deployment,
}

impl SysTable for RegistryTable {
    fn schema(&self) -> SchemaRef {
        let s = || DataType::Utf8;
        match self {
            Self::Service => schema(&[
                ("name", s()),
                ("revision", DataType::UInt64),
                ("public", DataType::Boolean),
                ("ty", s()),
                ("deployment_id", s()),
            ]),
            Self::Deployment => schema(&[
                ("id", s()),
                ("ty", s()),
                ("endpoint", s()),
                ("created_at", timestamp()),
                ("min_service_protocol_version", DataType::UInt32),
                ("max_service_protocol_version", DataType::UInt32),
            ]),
        }
    }

    fn slices(&self, _scan: &Scan) -> usize {
        1
    }

    /// The registry is small and read whole, in one chunk.
    fn read_chunk(&self, source: &Source, scan: &Scan, cursor: &mut Cursor) -> Result<Option<RecordBatch>> {
        if std::mem::replace(&mut cursor.done, true) {
            return Ok(None);
        }
        let registry = source.schema.get();
        let mut rows = Rows::new(self.schema(), scan.projection());
        match self {
            Self::Service => {
                for (deployment, service) in registry.active_services() {
                    let manifest = service.effective_manifest();
                    rows.str(Some(&manifest.name))
                        .u64(Some(u64::from(service.revision)))
                        .bool(Some(!manifest.settings.ingress_private.unwrap_or(false)))
                        .str(Some(service_type_name(manifest.ty)))
                        .str(Some(&deployment.id.to_string()))
                        .end_row();
                }
            }
            Self::Deployment => {
                for deployment in &registry.deployments {
                    let created = chrono_ms(&deployment.created_at);
                    // Every deployment this server registers is reached over HTTP (no Lambda).
                    let ty = "http";
                    rows.str(Some(&deployment.id.to_string()))
                        .str(Some(ty))
                        .str(Some(&deployment.uri))
                        .timestamp(created)
                        .u32(u32::try_from(deployment.min_protocol_version).ok())
                        .u32(u32::try_from(deployment.max_protocol_version).ok())
                        .end_row();
                }
            }
        }
        rows.finish().map(Some)
    }
}

/// Milliseconds since the epoch of an RFC 3339 time (the registry's `created_at`).
fn chrono_ms(text: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
}
