//! API token store conformance: tokens are found by hash, listed by name, unique by name
//! and hash, revoked by deleting them, and their last use only moves forward; run
//! unchanged on PostgreSQL and SQLite (a fresh database each). Hashes are opaque bytes
//! here; hashing and minting are tested in rdev-server.

use chrono::{Duration, Utc};
use rdev_core::{
    queue::truncate_millis, ApiToken, ErrorCode, Project, ProjectStore, TokenHash, TokenName,
    TokenScope, TokenStore,
};
use rdev_store::SqlTokenStore;

use crate::common::{project, TestDb};

rdev_testkit::both_backends!(
    tokens_are_found_by_hash_and_listed_by_name,
    names_and_hashes_are_unique,
    revoked_tokens_are_gone,
    last_use_only_moves_forward,
    deleting_a_project_revokes_or_narrows_the_tokens_limited_to_it,
);

fn token(name: &str, scope: TokenScope, projects: &[&str]) -> ApiToken {
    ApiToken::new(
        TokenName::parse(name).unwrap(),
        scope,
        projects.iter().map(|p| project(p)).collect(),
        truncate_millis(Utc::now()),
    )
    .unwrap()
}

fn hash(fill: u8) -> TokenHash {
    TokenHash([fill; 32])
}

async fn tokens_are_found_by_hash_and_listed_by_name(t: TestDb) {
    let store = SqlTokenStore::new(t.db.clone());
    assert!(!store.has_tokens().await.unwrap());
    let bot = token("bot", TokenScope::Build, &["site", "blog"]);
    let ops = token("ops", TokenScope::Admin, &[]);
    store.create_token(&ops, &hash(2)).await.unwrap();
    store.create_token(&bot, &hash(1)).await.unwrap();
    assert!(store.has_tokens().await.unwrap());

    let found = store.token_by_hash(&hash(1)).await.unwrap().unwrap();
    assert_eq!(found, bot);
    assert_eq!(
        found.projects,
        [project("blog"), project("site")],
        "stored sorted"
    );
    assert_eq!(store.token_by_hash(&hash(2)).await.unwrap().unwrap(), ops);
    assert_eq!(store.token_by_hash(&hash(3)).await.unwrap(), None);
    let names: Vec<String> = store
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(names, ["bot", "ops"]);
}

async fn names_and_hashes_are_unique(t: TestDb) {
    let store = SqlTokenStore::new(t.db.clone());
    store
        .create_token(&token("bot", TokenScope::Build, &[]), &hash(1))
        .await
        .unwrap();
    let err = store
        .create_token(&token("bot", TokenScope::Read, &[]), &hash(2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "conflict");
    assert!(err.to_string().contains("bot"), "{err}");
    let err = store
        .create_token(&token("other", TokenScope::Read, &[]), &hash(1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "conflict");
    assert_eq!(store.list_tokens().await.unwrap().len(), 1);
    assert_eq!(
        store.token_by_hash(&hash(1)).await.unwrap().unwrap().scope,
        TokenScope::Build
    );
}

async fn revoked_tokens_are_gone(t: TestDb) {
    let store = SqlTokenStore::new(t.db.clone());
    let bot = token("bot", TokenScope::Build, &["site"]);
    store.create_token(&bot, &hash(1)).await.unwrap();
    store.revoke_token(&bot.name).await.unwrap();
    assert_eq!(store.token_by_hash(&hash(1)).await.unwrap(), None);
    assert!(!store.has_tokens().await.unwrap());
    let err = store.revoke_token(&bot.name).await.unwrap_err();
    assert_eq!(err.code(), "not_found");
    // The name is free again, with a new hash; the old hash still matches nothing.
    store.create_token(&bot, &hash(9)).await.unwrap();
    assert_eq!(store.token_by_hash(&hash(1)).await.unwrap(), None);
    assert!(store.token_by_hash(&hash(9)).await.unwrap().is_some());
}

async fn last_use_only_moves_forward(t: TestDb) {
    let store = SqlTokenStore::new(t.db.clone());
    let bot = token("bot", TokenScope::Read, &[]);
    store.create_token(&bot, &hash(1)).await.unwrap();
    let last_used = || async {
        store
            .token_by_hash(&hash(1))
            .await
            .unwrap()
            .unwrap()
            .last_used_at
    };
    assert_eq!(last_used().await, None);
    let later = truncate_millis(Utc::now() + Duration::minutes(5));
    store.mark_token_used(&bot.name, later).await.unwrap();
    assert_eq!(last_used().await, Some(later));
    store
        .mark_token_used(&bot.name, later - Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(last_used().await, Some(later), "an older use is ignored");
    // Marking a revoked (missing) token is not an error: the request already passed.
    store
        .mark_token_used(&TokenName::parse("gone").unwrap(), later)
        .await
        .unwrap();
}

/// A project created again under a deleted one's name is another project: no token that
/// was limited to the old one may reach it.
async fn deleting_a_project_revokes_or_narrows_the_tokens_limited_to_it(t: TestDb) {
    for name in ["site", "blog"] {
        let p: Project = serde_json::from_value(
            serde_json::json!({"name": name, "repo_url": format!("/x/{name}.git")}),
        )
        .unwrap();
        t.store.create_project(&p).await.unwrap();
    }
    let tokens = SqlTokenStore::new(t.db.clone());
    let only_site = token("only-site", TokenScope::Build, &["site"]);
    let both = token("both", TokenScope::Read, &["site", "blog"]);
    let every = token("every", TokenScope::Build, &[]);
    for (i, tok) in [&only_site, &both, &every].into_iter().enumerate() {
        tokens.create_token(tok, &hash(i as u8 + 1)).await.unwrap();
    }
    let deleted = t
        .store
        .delete_project(&project("site"), "api")
        .await
        .unwrap();
    assert_eq!(deleted.tokens_revoked, ["only-site"]);
    assert_eq!(deleted.tokens_narrowed, ["both"]);
    assert_eq!(tokens.token_by_hash(&hash(1)).await.unwrap(), None);
    let narrowed = tokens.token_by_hash(&hash(2)).await.unwrap().unwrap();
    assert_eq!(narrowed.projects, [project("blog")]);
    assert_eq!(
        tokens.token_by_hash(&hash(3)).await.unwrap().unwrap(),
        every
    );
}
