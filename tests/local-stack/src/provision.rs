//! Creates the template's tables, buckets and queues in the local emulators.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::template::{Bindings, Template, TemplateError};

/// Where the emulators listen, and the fixed local credentials.
#[derive(Debug, Clone)]
pub struct LocalEndpoints {
    pub dynamodb: String,
    pub s3: String,
    pub sqs: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

pub const LOCAL_ACCESS_KEY: &str = "cclocal";
pub const LOCAL_SECRET_KEY: &str = "cclocalsecret";
pub const LOCAL_REGION: &str = "us-east-1";

impl LocalEndpoints {
    /// From `AWS_ENDPOINT_URL_{DYNAMODB,S3,SQS}` (and the local credentials).
    pub fn from_env() -> Result<Self, ProvisionError> {
        let get = |k: &str| std::env::var(k).map_err(|_| ProvisionError::MissingEnv(k.to_string()));
        Ok(Self {
            dynamodb: get("AWS_ENDPOINT_URL_DYNAMODB")?,
            s3: get("AWS_ENDPOINT_URL_S3")?,
            sqs: get("AWS_ENDPOINT_URL_SQS")?,
            region: std::env::var("AWS_REGION").unwrap_or_else(|_| LOCAL_REGION.into()),
            access_key: std::env::var("AWS_ACCESS_KEY_ID")
                .unwrap_or_else(|_| LOCAL_ACCESS_KEY.into()),
            secret_key: std::env::var("AWS_SECRET_ACCESS_KEY")
                .unwrap_or_else(|_| LOCAL_SECRET_KEY.into()),
        })
    }

    fn creds(&self) -> aws_sdk_dynamodb::config::Credentials {
        aws_sdk_dynamodb::config::Credentials::new(
            &self.access_key,
            &self.secret_key,
            None,
            None,
            "cc-local",
        )
    }

    pub fn dynamodb_client(&self) -> aws_sdk_dynamodb::Client {
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new(self.region.clone()))
            .credentials_provider(self.creds())
            .endpoint_url(&self.dynamodb)
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
    }

    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(self.region.clone()))
            .credentials_provider(self.creds())
            .endpoint_url(&self.s3)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    pub fn sqs_client(&self) -> aws_sdk_sqs::Client {
        let conf = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new(self.region.clone()))
            .credentials_provider(self.creds())
            .endpoint_url(&self.sqs)
            .build();
        aws_sdk_sqs::Client::from_conf(conf)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("{resource}: {message}")]
    Aws { resource: String, message: String },
}

fn aws_err<E: std::fmt::Debug>(resource: &str, e: E) -> ProvisionError {
    ProvisionError::Aws {
        resource: resource.to_string(),
        message: format!("{e:?}"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub name: String,
    pub url: String,
    pub arn: String,
}

/// What was created, by template logical id.
#[derive(Debug, Clone, Default)]
pub struct Provisioned {
    pub tables: BTreeMap<String, String>,
    pub buckets: BTreeMap<String, String>,
    pub queues: BTreeMap<String, QueueInfo>,
    /// The first table (the template has one: `StateTable`).
    pub table_name: String,
    pub bucket: String,
    /// The queue that has a redrive policy, and its dead-letter queue.
    pub queue_url: String,
    pub dlq_url: String,
}

impl Provisioned {
    /// What `!Ref` / `!GetAtt` of the provisioned resources resolve to locally.
    pub fn bindings(&self, region: &str) -> Bindings {
        let mut b = Bindings::with_pseudo(region);
        for (id, name) in &self.tables {
            b.insert(id.clone(), name.clone());
            b.insert(
                format!("{id}.Arn"),
                format!("arn:aws:dynamodb:{region}:000000000000:table/{name}"),
            );
        }
        for (id, name) in &self.buckets {
            b.insert(id.clone(), name.clone());
            b.insert(format!("{id}.Arn"), format!("arn:aws:s3:::{name}"));
        }
        for (id, q) in &self.queues {
            b.insert(id.clone(), q.url.clone());
            b.insert(format!("{id}.Arn"), q.arn.clone());
            b.insert(format!("{id}.QueueName"), q.name.clone());
        }
        b
    }
}

/// Local physical name of a logical id: `prefix + LogicalId`.
pub fn physical_name(prefix: &str, logical_id: &str) -> String {
    format!("{prefix}{logical_id}")
}

/// Bucket names must be lowercase DNS labels.
pub fn bucket_name(prefix: &str, logical_id: &str) -> String {
    let raw = format!("{prefix}{logical_id}").to_ascii_lowercase();
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(63);
    s.trim_matches('-').to_string()
}

/// Creates (idempotently) every table, bucket and queue of the template,
/// names prefixed with `prefix` so tests can have isolated copies.
pub async fn provision(
    template: &Template,
    endpoints: &LocalEndpoints,
    prefix: &str,
) -> Result<Provisioned, ProvisionError> {
    let mut out = Provisioned::default();

    let ddb = endpoints.dynamodb_client();
    for t in template.tables()? {
        let name = physical_name(prefix, &t.logical_id);
        let mut req = ddb
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest);
        for (attr, ty) in &t.attributes {
            req = req.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attr)
                    .attribute_type(ScalarAttributeType::from(ty.as_str()))
                    .build()
                    .map_err(|e| aws_err(&t.logical_id, e))?,
            );
        }
        for k in &t.keys {
            req = req.key_schema(key_element(&k.attribute, &k.key_type, &t.logical_id)?);
        }
        for g in &t.gsis {
            let mut gb = GlobalSecondaryIndex::builder()
                .index_name(&g.name)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(g.projection_type.as_str()))
                        .build(),
                );
            for k in &g.keys {
                gb = gb.key_schema(key_element(&k.attribute, &k.key_type, &t.logical_id)?);
            }
            req = req.global_secondary_indexes(gb.build().map_err(|e| aws_err(&g.name, e))?);
        }
        match req.send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) => {}
            Err(e) => return Err(aws_err(&t.logical_id, e)),
        }
        if let Some(attr) = &t.ttl_attribute {
            let r = ddb
                .update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attr)
                        .enabled(true)
                        .build()
                        .map_err(|e| aws_err(&t.logical_id, e))?,
                )
                .send()
                .await;
            if let Err(e) = r {
                // Already enabled on an existing table is fine.
                let msg = format!("{e:?}");
                if !msg.contains("already enabled") {
                    return Err(aws_err(&t.logical_id, msg));
                }
            }
        }
        if out.table_name.is_empty() {
            out.table_name = name.clone();
        }
        out.tables.insert(t.logical_id.clone(), name);
    }

    let s3 = endpoints.s3_client();
    for b in template.buckets() {
        let name = bucket_name(prefix, &b.logical_id);
        match s3.create_bucket().bucket(&name).send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
                }) => {}
            Err(e) => return Err(aws_err(&b.logical_id, e)),
        }
        if out.bucket.is_empty() {
            out.bucket = name.clone();
        }
        out.buckets.insert(b.logical_id.clone(), name);
    }

    let sqs = endpoints.sqs_client();
    for q in template.queues()? {
        let name = physical_name(prefix, &q.logical_id);
        let mut req = sqs.create_queue().queue_name(&name);
        if let Some(v) = q.visibility_timeout {
            req = req.attributes(QueueAttributeName::VisibilityTimeout, v.to_string());
        }
        if let Some(v) = q.message_retention {
            req = req.attributes(QueueAttributeName::MessageRetentionPeriod, v.to_string());
        }
        if let Some((dlq, max)) = &q.redrive {
            let target = out.queues.get(dlq).ok_or_else(|| ProvisionError::Aws {
                resource: q.logical_id.clone(),
                message: format!("dead-letter queue {dlq} not provisioned"),
            })?;
            let policy = serde_json::json!({
                "deadLetterTargetArn": target.arn,
                "maxReceiveCount": max.to_string(),
            });
            req = req.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        let url = req
            .send()
            .await
            .map_err(|e| aws_err(&q.logical_id, e))?
            .queue_url
            .unwrap_or_default();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| aws_err(&q.logical_id, e))?;
        let arn = attrs
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap_or_default();
        // The first queue with a dead-letter queue is the offload queue; later
        // ones (the routing queue) are reached through the template's `!Ref`s.
        if let Some((dlq, _)) = &q.redrive
            && out.queue_url.is_empty()
        {
            out.queue_url = url.clone();
            out.dlq_url = out
                .queues
                .get(dlq)
                .map(|d| d.url.clone())
                .unwrap_or_default();
        }
        out.queues
            .insert(q.logical_id.clone(), QueueInfo { name, url, arn });
    }
    Ok(out)
}

fn key_element(attr: &str, key_type: &str, id: &str) -> Result<KeySchemaElement, ProvisionError> {
    KeySchemaElement::builder()
        .attribute_name(attr)
        .key_type(KeyType::from(key_type))
        .build()
        .map_err(|e| aws_err(id, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_are_dns_safe() {
        assert_eq!(
            bucket_name("t1_", "RecordingsBucket"),
            "t1-recordingsbucket"
        );
    }
}
