//! Invalidations: every source (signed webhook, write-through of a proxied
//! mutation, admin purge, and later the cluster stream) is folded into one
//! `Invalidation` value that the cache applies.

pub mod dedupe;
pub mod webhook;

use crate::ids::ContainerId;

/// What happened to the container, by event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `content.regenerated`: media replaced, old asset ids stop resolving.
    Regenerated,
    /// `content.generated`: new content generated; also lifts a tombstone.
    Generated,
    /// `content.deleted`: container and all its assets are gone.
    Deleted,
    /// `content.updated`: caption or other body fields changed.
    Updated,
    /// `content.approved` / `content.rejected`: approval status changed.
    Approved,
    Rejected,
    /// Admin purge of one container (no revocation, no tombstone).
    Purge,
    /// Admin purge of everything.
    PurgeAll,
}

impl EventType {
    /// Maps a webhook `type`; `None` for types the gateway ignores.
    pub fn from_webhook_type(t: &str) -> Option<EventType> {
        Some(match t {
            "content.regenerated" => EventType::Regenerated,
            "content.generated" => EventType::Generated,
            "content.deleted" => EventType::Deleted,
            "content.updated" => EventType::Updated,
            "content.approved" => EventType::Approved,
            "content.rejected" => EventType::Rejected,
            _ => return None,
        })
    }

    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Regenerated => "regenerated",
            EventType::Generated => "generated",
            EventType::Deleted => "deleted",
            EventType::Updated => "updated",
            EventType::Approved => "approved",
            EventType::Rejected => "rejected",
            EventType::Purge => "purge",
            EventType::PurgeAll => "purge_all",
        }
    }

    /// Whether the container's previous asset ids stop resolving.
    pub fn revokes_assets(self) -> bool {
        matches!(
            self,
            EventType::Regenerated | EventType::Generated | EventType::Deleted
        )
    }
}

/// Where an invalidation came from (metric label `source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Webhook,
    WriteThrough,
    Admin,
    Cluster,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::WriteThrough => "write_through",
            Source::Admin => "admin",
            Source::Cluster => "cluster",
        }
    }
}

/// One invalidation, whatever its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalidation {
    /// Stable id for deduplication (`X-Layers-Event-Id`, or the id of a
    /// replayed event); `None` for local events that cannot repeat.
    pub event_id: Option<String>,
    pub source: Source,
    pub event_type: EventType,
    /// The container; `None` only for `PurgeAll`.
    pub container: Option<ContainerId>,
    /// Asset ids the event names as revoked (`data.previousAssetIds`, and on
    /// delete every id in `data.assets`).
    pub revoked_asset_ids: Vec<String>,
    /// Asset ids the event names as current (`data.assets` of a regenerate):
    /// never revoked by this event even if an older event revoked them.
    pub current_asset_ids: Vec<String>,
    /// When the origin made the change (`updatedAt` of the container it
    /// answered a mutation with, or `data.updatedAt` of an event), unix ms.
    /// A fill older than this comes from a lagging replica: not cached.
    pub changed_at: Option<i64>,
    /// When the event was created (unix ms, from an `evt_<ULID>` id), for
    /// ordering a `content.generated` against a delete when neither is
    /// dated. Not a change time: never used for the lag floor.
    pub created_at: Option<i64>,
    /// The origin re-sent a past event (the signed body's `replayOf`): a
    /// replayed delete not dated within the origin's retries is history
    /// (`cache::fence::is_past_replay`).
    pub replay: bool,
    /// When the instance that accepted it took it (unix ms, its clock),
    /// carried to peers and into the fence record: the time its age is
    /// judged at everywhere (`cache::fence::judged_at`). `None` until
    /// accepted (`ContentCache::stamp_accepted`).
    pub accepted_at: Option<i64>,
}
