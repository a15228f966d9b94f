//! Permissions enforced by the checked view: for every call, who may and who
//! may not. Levels: deny < read < edit < admin; an explicit deny wins; no
//! entry and no default means read; empty permissions inherit the parent's.

use keel::drive::{Drive, DriveOptions, DriveView, Item, ItemId, Level, NewItem, Permissions, Version, WalkOrder};
use keel::ErrorKind;
use serde_json::json;

fn perms(default: Option<Level>, users: &[(&str, Level)], roles: &[(&str, Level)]) -> Permissions {
    Permissions {
        default,
        users: users.iter().map(|(n, l)| (n.to_string(), *l)).collect(),
        roles: roles.iter().map(|(n, l)| (n.to_string(), *l)).collect(),
    }
}

/// The tree every test starts from:
/// - root: ann admin (everyone else: read)
/// - team: default deny; ann admin, bob edit, carl read; role `banned` deny
///   - doc (type note, no permissions: inherits team)
///   - open (default read: visible to everyone)
///   - secret (bob deny; everyone else without an entry: read)
struct Fixture {
    drive: Drive,
    team: Item,
    doc: Item,
    open: Item,
    secret: Item,
}

fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("keel-drive-perms-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let drive = Drive::open(dir.join("drive.lmdb"), &DriveOptions::default()).unwrap();
    drive
        .set_permissions(ItemId::ROOT, &perms(None, &[("ann", Level::Admin)], &[]))
        .unwrap();
    let team_perms = perms(
        Some(Level::Deny),
        &[("ann", Level::Admin), ("bob", Level::Edit), ("carl", Level::Read)],
        &[("banned", Level::Deny)],
    );
    let team = drive
        .create(ItemId::ROOT, &NewItem::named("team").with_permissions(team_perms))
        .unwrap();
    let doc = drive.create(team.id, &NewItem::typed("doc", "note")).unwrap();
    drive.set_data(doc.id, &json!({"v": 1}), None).unwrap();
    let open = drive
        .create(
            team.id,
            &NewItem::typed("open", "note").with_permissions(perms(Some(Level::Read), &[], &[])),
        )
        .unwrap();
    let secret = drive
        .create(
            team.id,
            &NewItem::named("secret").with_permissions(perms(None, &[("bob", Level::Deny)], &[])),
        )
        .unwrap();
    Fixture {
        drive,
        team,
        doc,
        open,
        secret,
    }
}

fn as_(f: &Fixture, user: &str) -> DriveView {
    match user {
        "eve" => f.drive.as_user("eve", &["banned"]),
        _ => f.drive.as_user(user, &[]),
    }
}

#[track_caller]
fn denied<T: std::fmt::Debug>(result: keel::Result<T>) {
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
}

#[test]
fn reading_an_item_needs_read() {
    let f = fixture("get");
    for user in ["ann", "bob", "carl"] {
        assert_eq!(as_(&f, user).get(f.doc.id).unwrap().id, f.doc.id, "{user}");
        assert!(as_(&f, user).get_typed(f.doc.id, "note").is_ok());
    }
    for user in ["dave", "eve"] {
        denied(as_(&f, user).get(f.doc.id));
        denied(as_(&f, user).get_typed(f.doc.id, "note"));
    }
    // An item's own default opens it below a denied folder; an explicit deny closes it.
    assert!(as_(&f, "dave").get(f.open.id).is_ok());
    denied(as_(&f, "bob").get(f.secret.id));
    assert!(as_(&f, "carl").get(f.secret.id).is_ok());
}

#[test]
fn an_explicit_deny_wins_over_a_grant() {
    let f = fixture("deny-wins");
    f.drive
        .set_permissions(
            f.doc.id,
            &perms(None, &[("eve", Level::Admin)], &[("banned", Level::Deny)]),
        )
        .unwrap();
    denied(as_(&f, "eve").get(f.doc.id));
    assert!(
        f.drive.as_user("eve", &[]).get(f.doc.id).is_ok(),
        "without the role, the grant applies"
    );
}

#[test]
fn resolving_and_naming_paths_need_read_on_every_step() {
    let f = fixture("paths");
    assert_eq!(as_(&f, "carl").resolve("team/doc").unwrap().len(), 2);
    assert_eq!(as_(&f, "carl").at_path("team/doc").unwrap().id, f.doc.id);
    assert_eq!(as_(&f, "carl").path_of(f.doc.id).unwrap(), "team/doc");
    let err = as_(&f, "dave").resolve("team/open").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert!(err.message().contains("step 1"), "{err}");
    denied(as_(&f, "dave").at_path("team/open"));
    denied(as_(&f, "dave").path_of(f.open.id));
    denied(as_(&f, "bob").resolve("team/secret"));
}

#[test]
fn listings_need_read_on_the_parent_and_hide_unreadable_items() {
    let f = fixture("listings");
    let names = |items: Vec<Item>| items.into_iter().map(|i| i.name).collect::<Vec<_>>();
    assert_eq!(
        names(as_(&f, "carl").children(f.team.id, None, 10).unwrap()),
        ["doc", "open", "secret"]
    );
    assert_eq!(
        names(as_(&f, "bob").children(f.team.id, None, 10).unwrap()),
        ["doc", "open"]
    );
    denied(as_(&f, "dave").children(f.team.id, None, 10));
    assert!(
        as_(&f, "dave").children(ItemId::ROOT, None, 10).unwrap().is_empty(),
        "team is hidden"
    );

    assert_eq!(
        as_(&f, "carl").walk(f.team.id, WalkOrder::ParentsFirst).unwrap().len(),
        4
    );
    denied(as_(&f, "dave").walk(f.team.id, WalkOrder::ParentsFirst));
    let dave_sees = names(as_(&f, "dave").walk(ItemId::ROOT, WalkOrder::ParentsFirst).unwrap());
    // `secret` has entries but none for dave and no default: read.
    assert_eq!(
        dave_sees,
        ["open", "secret"],
        "readable items below a hidden folder are still walked"
    );

    assert_eq!(as_(&f, "carl").by_type("note", None, 10).unwrap().len(), 2);
    assert_eq!(names(as_(&f, "dave").by_type("note", None, 10).unwrap()), ["open"]);
}

#[test]
fn creating_needs_edit_on_the_parent_and_admin_to_set_permissions() {
    let f = fixture("create");
    let bob = as_(&f, "bob");
    let made = bob.create(f.team.id, &NewItem::named("by-bob")).unwrap();
    assert_eq!((made.creator.as_str(), made.updater.as_str()), ("bob", "bob"));
    bob.create_at("team", &NewItem::named("by-bob-2")).unwrap();
    bob.make_path("team/x/y").unwrap();
    denied(as_(&f, "carl").create(f.team.id, &NewItem::named("c")));
    denied(as_(&f, "carl").create_at("team", &NewItem::named("c")));
    denied(as_(&f, "carl").make_path("team/z"));
    denied(as_(&f, "dave").create(ItemId::ROOT, &NewItem::named("d")));
    let with_perms = NewItem::named("p").with_permissions(perms(Some(Level::Admin), &[], &[]));
    denied(bob.create(f.team.id, &with_perms));
    as_(&f, "ann").create(f.team.id, &with_perms).unwrap();
    assert!(
        f.drive.resolve("team/c").is_err() && f.drive.resolve("team/z").is_err(),
        "nothing was created"
    );
}

#[test]
fn moving_and_renaming_need_edit_on_the_item_and_the_destination() {
    let f = fixture("move");
    let bob = as_(&f, "bob");
    bob.rename(f.doc.id, "Doc2").unwrap();
    denied(bob.move_item(f.doc.id, f.open.id, Some("doc3"))); // open: bob only reads
    denied(bob.move_item(f.doc.id, ItemId::ROOT, None)); // root: bob only reads
    denied(as_(&f, "carl").rename(f.doc.id, "nope"));
    denied(as_(&f, "carl").move_item(f.doc.id, f.team.id, Some("nope")));
    let ann = as_(&f, "ann");
    let moved = ann.move_item(f.doc.id, ItemId::ROOT, Some("top")).unwrap();
    assert_eq!(moved.updater, "ann");
    // Moved out of the team, doc now inherits the root's permissions: dave reads it.
    assert!(as_(&f, "dave").get(f.doc.id).is_ok());
}

#[test]
fn deleting_needs_admin_on_every_item_removed() {
    let f = fixture("delete");
    denied(as_(&f, "bob").delete(f.doc.id));
    // ann is admin of team, but `secret` has its own permissions giving her read.
    denied(as_(&f, "ann").delete(f.team.id));
    assert!(f.drive.get(f.doc.id).is_ok(), "nothing was deleted");
    as_(&f, "ann").delete(f.doc.id).unwrap();
    f.drive
        .set_permissions(f.secret.id, &perms(None, &[("ann", Level::Admin)], &[]))
        .unwrap();
    denied(as_(&f, "ann").delete(f.team.id)); // `open` still gives her only read
    f.drive.set_permissions(f.open.id, &Permissions::default()).unwrap(); // now inherits team
    assert_eq!(as_(&f, "ann").delete(f.team.id).unwrap(), 3);
}

#[test]
fn changing_permissions_needs_admin() {
    let f = fixture("set-perms");
    denied(as_(&f, "bob").set_permissions(f.doc.id, &Permissions::default()));
    denied(as_(&f, "carl").set_permissions(f.doc.id, &Permissions::default()));
    let open_up = perms(Some(Level::Read), &[], &[]);
    as_(&f, "ann").set_permissions(f.doc.id, &open_up).unwrap();
    assert!(as_(&f, "dave").get(f.doc.id).is_ok());
    denied(as_(&f, "bob").set_permissions(ItemId::ROOT, &Permissions::default()));
}

#[test]
fn data_needs_read_to_see_and_edit_to_change() {
    let f = fixture("data");
    let bob = as_(&f, "bob");
    let written = bob.set_data(f.doc.id, &json!({"v": 2}), None).unwrap();
    assert_eq!(f.drive.versions(f.doc.id).unwrap()[0].updater, "bob");
    assert_eq!(f.drive.get(f.doc.id).unwrap().updater, "bob");
    denied(as_(&f, "carl").set_data(f.doc.id, &json!({"v": 3}), None));
    assert_eq!(as_(&f, "carl").get_data(f.doc.id, None).unwrap().1, json!({"v": 2}));
    assert_eq!(as_(&f, "carl").versions(f.doc.id).unwrap().len(), 2);
    denied(as_(&f, "dave").get_data(f.doc.id, None));
    denied(as_(&f, "dave").versions(f.doc.id));
    denied(as_(&f, "carl").delete_data(f.doc.id, written));
    assert_eq!(bob.delete_data(f.doc.id, written).unwrap(), Some(Version::new(0, 0, 1)));
}

#[test]
fn registering_schemas_needs_admin_on_the_root() {
    let f = fixture("schemas");
    let schema = json!({"type": "object"});
    denied(as_(&f, "bob").set_schema("note", &schema, 1, None));
    assert!(as_(&f, "ann").set_schema("note", &schema, 1, None).unwrap());
    assert_eq!(as_(&f, "dave").schema("note").unwrap().unwrap().0, 1);
}

#[test]
fn a_checked_batch_is_checked_and_all_or_nothing() {
    let f = fixture("batch");
    let bob = as_(&f, "bob");
    let result: keel::Result<()> = bob.batch(|b| {
        b.create(f.team.id, &NewItem::named("ok"))?;
        b.delete(f.doc.id)?; // bob may not delete
        Ok(())
    });
    denied(result);
    assert!(f.drive.resolve("team/ok").is_err(), "the allowed part was undone too");
    bob.batch(|b| {
        let made = b.create(f.team.id, &NewItem::named("ok"))?;
        assert!(b.get(made.id).is_ok());
        denied(b.get(f.secret.id));
        Ok(())
    })
    .unwrap();
    assert!(f.drive.resolve("team/ok").is_ok());
}

#[test]
fn attributed_views_record_the_user_without_checking() {
    let f = fixture("attributed");
    let view = f.drive.attributed_to("service-x");
    assert!(!view.is_checked());
    let made = view.create(f.secret.id, &NewItem::named("s")).unwrap();
    assert_eq!(made.creator, "service-x");
    assert!(as_(&f, "bob").is_checked());
}
