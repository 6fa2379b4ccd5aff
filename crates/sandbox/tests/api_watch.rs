//! Watch streams beyond the basics: bookmarks a client can resume from, `sendInitialEvents`,
//! per-watcher filtering, and streams that end when the server shuts down.

mod api_support;

use std::time::Duration;

use api_support::{pod, server};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{PostParams, WatchEvent, WatchParams};
use serde_json::json;

type Events = futures::stream::BoxStream<'static, kube::Result<WatchEvent<Pod>>>;

async fn next(events: &mut Events) -> WatchEvent<Pod> {
    tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .expect("a watch event within 10s")
        .unwrap()
        .expect("the stream is still open")
}

/// The next event that is not a bookmark.
async fn next_object(events: &mut Events) -> WatchEvent<Pod> {
    loop {
        match next(events).await {
            WatchEvent::Bookmark(_) => continue,
            event => return event,
        }
    }
}

fn name(event: &WatchEvent<Pod>) -> String {
    match event {
        WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p) => {
            p.metadata.name.clone().unwrap()
        }
        other => panic!("expected an object event, got {other:?}"),
    }
}

#[tokio::test]
async fn bookmarks_carry_a_resource_version_to_resume_from() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.create(&PostParams::default(), &pod("a", None, json!({})))
        .await
        .unwrap();
    // kube-rs asks for bookmarks by default (allowWatchBookmarks=true).
    let params = WatchParams::default().timeout(30);
    assert!(params.bookmarks);
    let mut events = pods.watch(&params, "0").await.unwrap().boxed();
    assert_eq!(name(&next(&mut events).await), "a");
    let rv = match next(&mut events).await {
        WatchEvent::Bookmark(b) => b.metadata.resource_version,
        other => panic!("expected a BOOKMARK after the initial events, got {other:?}"),
    };
    drop(events);
    pods.create(&PostParams::default(), &pod("b", None, json!({})))
        .await
        .unwrap();
    let mut resumed = pods.watch(&params, &rv).await.unwrap().boxed();
    match next(&mut resumed).await {
        WatchEvent::Added(p) => assert_eq!(p.metadata.name.as_deref(), Some("b")),
        other => panic!("resuming from the bookmark replays only what followed it: {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn send_initial_events_ends_with_an_annotated_bookmark() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.create(&PostParams::default(), &pod("a", None, json!({})))
        .await
        .unwrap();
    let params = WatchParams::streaming_lists().timeout(30);
    let mut events = pods.watch(&params, "").await.unwrap().boxed();
    assert_eq!(name(&next(&mut events).await), "a");
    match next(&mut events).await {
        WatchEvent::Bookmark(b) => assert_eq!(
            b.metadata
                .annotations
                .get("k8s.io/initial-events-end")
                .map(String::as_str),
            Some("true")
        ),
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn each_watcher_sees_only_its_selection_and_streams_end_at_shutdown() {
    let server = server().await;
    let client = server.client();
    let web: Api<Pod> = Api::namespaced(client.clone(), "default");
    let system: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let params = WatchParams::default().timeout(60).labels("app=web");
    let mut web_events = web.watch(&params, "0").await.unwrap().boxed();
    let on_node = WatchParams::default()
        .timeout(60)
        .fields("spec.nodeName=n1");
    let mut node_events = Api::<Pod>::all(client.clone())
        .watch(&on_node, "0")
        .await
        .unwrap()
        .boxed();
    system
        .create(
            &PostParams::default(),
            &pod("proxy", Some("n1"), json!({"app": "web"})),
        )
        .await
        .unwrap();
    web.create(
        &PostParams::default(),
        &pod("db", None, json!({"app": "db"})),
    )
    .await
    .unwrap();
    web.create(
        &PostParams::default(),
        &pod("web", Some("n2"), json!({"app": "web"})),
    )
    .await
    .unwrap();
    assert_eq!(name(&next_object(&mut web_events).await), "web");
    assert_eq!(name(&next_object(&mut node_events).await), "proxy");

    server.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(10), web_events.try_next())
        .await
        .expect("the stream ends within 10s of shutdown");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}
