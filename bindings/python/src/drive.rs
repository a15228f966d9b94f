//! `keel.Drive`, its batches (`keel.DriveBatch`) and listing iterators.
//! Items are dicts in the JSON form of `keel::drive::json`; every call that
//! touches LMDB runs with the GIL released.

use std::sync::Arc;

use keel::drive::{
    Drive, DriveOptions, DriveView, Item, ItemId, Migration, NewItem, OpenBatch, Permissions, Version, WalkOrder,
};
use keel::lmdb::Durability;
use keel::Error;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use serde_json::Value;

use crate::errors::to_pyerr;
use crate::json::{from_py, to_py};
use crate::run::{blocking, quick};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDrive>()?;
    m.add_class::<PyDriveBatch>()?;
    m.add_class::<PyItemIter>()?;
    m.add("DRIVE_ROOT", ItemId::ROOT.to_string())?;
    m.add_function(wrap_pyfunction!(verify_file, m)?)?;
    Ok(())
}

/// Verifies a keel LMDB file (a drive, or operations and jobs) in a child
/// process, so damage that would crash LMDB cannot crash this one; returns
/// the report as a dict: `{"file", "ok", "tables", "problems",
/// "more_problems"}`. Never changes the file.
#[pyfunction]
fn verify_file<'py>(py: Python<'py>, path: std::path::PathBuf) -> PyResult<Bound<'py, PyAny>> {
    let report = blocking(py, || keel::drive::verify_file(&path))?;
    to_py(py, &report.to_json())
}

/// An item id from Python: 32 hex characters, 16 bytes, or None (the root).
fn id_arg(value: Option<&Bound<'_, PyAny>>) -> PyResult<ItemId> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(ItemId::ROOT);
    };
    let parsed = if let Ok(text) = value.cast::<PyString>() {
        ItemId::parse(
            &text
                .to_cow()
                .map_err(|_| Error::invalid_argument("item id is not valid UTF-8"))
                .map_err(err)?,
        )
    } else if let Ok(bytes) = value.cast::<PyBytes>() {
        <[u8; 16]>::try_from(bytes.as_bytes())
            .map(ItemId::from_bytes)
            .map_err(|_| Error::invalid_argument("an item id as bytes is 16 bytes long"))
    } else {
        Err(Error::invalid_argument(
            "an item id is a 32-character hex str or 16 bytes",
        ))
    };
    parsed.map_err(err)
}

fn err(error: Error) -> PyErr {
    Python::attach(|py| to_pyerr(py, error))
}

fn replace_needs_version() -> keel::Error {
    keel::Error::invalid_argument("replace=True needs the version to replace")
}

/// A migration that is not callable is refused when the schema is set, not
/// when (or if) the first item of the type is migrated.
fn refuse_uncallable(migrate: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = migrate.py();
    quick(py, || {
        if migrate.is_callable() {
            return Ok(());
        }
        let kind = migrate
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        Err(keel::Error::invalid_argument(format!(
            "migrate must be callable, not {kind}"
        )))
    })
}

fn version_arg(version: Option<&str>) -> keel::Result<Option<Version>> {
    version.map(Version::parse).transpose()
}

/// The item as a dict with the keys of its JSON form, built directly (no
/// JSON value in between: this is the hot path of every item call).
fn item_dict<'py>(py: Python<'py>, item: &Item) -> PyResult<Bound<'py, PyAny>> {
    use pyo3::intern;
    let dict = PyDict::new(py);
    dict.set_item(intern!(py, "id"), item.id.to_string())?;
    dict.set_item(intern!(py, "parent"), item.parent.to_string())?;
    dict.set_item(intern!(py, "name"), &item.name)?;
    dict.set_item(intern!(py, "type"), &item.kind)?;
    dict.set_item(intern!(py, "created"), item.created)?;
    dict.set_item(intern!(py, "creator"), &item.creator)?;
    dict.set_item(intern!(py, "children"), item.children)?;
    dict.set_item(intern!(py, "data_size"), item.data_size)?;
    dict.set_item(intern!(py, "version"), item.version.map(|v| v.to_string()))?;
    dict.set_item(intern!(py, "updated"), item.updated)?;
    dict.set_item(intern!(py, "updater"), &item.updater)?;
    let permissions = PyDict::new(py);
    permissions.set_item(
        intern!(py, "default"),
        item.permissions.default.map(|level| level.name()),
    )?;
    for (key, map) in [("users", &item.permissions.users), ("roles", &item.permissions.roles)] {
        let levels = PyDict::new(py);
        for (name, level) in map {
            levels.set_item(name, level.name())?;
        }
        permissions.set_item(key, levels)?;
    }
    dict.set_item(intern!(py, "permissions"), permissions)?;
    Ok(dict.into_any())
}

fn item_list<'py>(py: Python<'py>, items: &[Item]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for item in items {
        list.append(item_dict(py, item)?)?;
    }
    Ok(list)
}

fn new_item(name: String, kind: Option<String>, permissions: Option<&Bound<'_, PyAny>>) -> keel::Result<NewItem> {
    let permissions = match permissions.filter(|p| !p.is_none()) {
        Some(p) => Permissions::from_json(&from_py(p)?)?,
        None => Permissions::default(),
    };
    Ok(NewItem {
        name,
        kind,
        permissions,
    })
}

fn walk_order(order: &str) -> keel::Result<WalkOrder> {
    match order {
        "children_first" => Ok(WalkOrder::ChildrenFirst),
        "parents_first" => Ok(WalkOrder::ParentsFirst),
        other => Err(Error::invalid_argument(format!(
            "walk order {other:?} is not \"children_first\" or \"parents_first\""
        ))),
    }
}

/// A drive: a tree of named items, typed items carrying versioned JSON data,
/// per-item permissions. `Drive(path)` opens (or creates) the file; every
/// write is durable when it returns. Item ids are 32-character hex str (16
/// bytes are accepted too); `None` as a parent means the root.
#[pyclass(name = "Drive", module = "keel", frozen)]
pub struct PyDrive {
    drive: Drive,
    view: DriveView,
}

#[pymethods]
impl PyDrive {
    #[new]
    #[pyo3(signature = (path, *, durable=true, initial_map_size=None, allow_types_without_schema=true))]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        durable: bool,
        initial_map_size: Option<usize>,
        allow_types_without_schema: bool,
    ) -> PyResult<Self> {
        let mut options = DriveOptions {
            allow_types_without_schema,
            ..DriveOptions::default()
        };
        if !durable {
            options.durability = Durability::NoSyncRisksLastCommits;
        }
        if let Some(size) = initial_map_size {
            options.initial_map_size = size;
        }
        let drive = blocking(py, || Drive::open(&path, &options))
            .map_err(|err| crate::errors::with_filename(py, err, &path))?;
        let view = (*drive).clone();
        Ok(PyDrive { drive, view })
    }

    /// A view of the same drive whose every call enforces `user`'s levels
    /// (with `roles`); raises keel.PermissionDenied when a level is missing.
    #[pyo3(signature = (user, roles=Vec::new()))]
    fn as_user(&self, py: Python<'_>, user: &str, roles: Vec<String>) -> PyResult<PyDrive> {
        if self.view.is_checked() {
            return Err(to_pyerr(
                py,
                Error::permission_denied("as_user is only offered by the unchecked drive"),
            ));
        }
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        Ok(PyDrive {
            drive: self.drive.clone(),
            view: self.drive.as_user(user, &roles),
        })
    }

    /// The user this view acts as ("" for the unchecked drive).
    #[getter]
    fn user(&self) -> String {
        self.view.user().to_owned()
    }

    /// Whether this view enforces permission levels.
    #[getter]
    fn checked(&self) -> bool {
        self.view.is_checked()
    }

    /// The drive file's canonical path.
    #[getter]
    fn path(&self) -> String {
        self.drive.path().display().to_string()
    }

    /// The item with this id, as a dict; with `type`, raises keel.Conflict
    /// if the item has another type.
    #[pyo3(signature = (id, r#type=None))]
    fn get<'py>(&self, py: Python<'py>, id: &Bound<'py, PyAny>, r#type: Option<String>) -> PyResult<Bound<'py, PyAny>> {
        let id = id_arg(Some(id))?;
        let item = blocking(py, || match &r#type {
            Some(kind) => self.view.get_typed(id, kind),
            None => self.view.get(id),
        })?;
        item_dict(py, &item)
    }

    /// Every item along `path` ("a/b/c", case-insensitive), first step first.
    fn resolve<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyList>> {
        let items = blocking(py, || self.view.resolve(path))?;
        item_list(py, &items)
    }

    /// The item at `path` (the root for "").
    fn at_path<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyAny>> {
        let item = blocking(py, || self.view.at_path(path))?;
        item_dict(py, &item)
    }

    /// The path of an item ("a/b/c", names as given).
    fn path_of(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<String> {
        let id = id_arg(Some(id))?;
        blocking(py, || self.view.path_of(id))
    }

    /// The children of `parent` (None: the root) in name order, ignoring
    /// case, starting after the child named `after`, at most `limit`: an
    /// iterator fetching pages of 256 with the GIL released.
    #[pyo3(signature = (parent=None, *, after=None, limit=None))]
    fn children(
        &self,
        parent: Option<&Bound<'_, PyAny>>,
        after: Option<String>,
        limit: Option<usize>,
    ) -> PyResult<PyItemIter> {
        Ok(PyItemIter::new(
            self.view.clone(),
            Listing::Children(id_arg(parent)?),
            after,
            limit,
        ))
    }

    /// Items of `type`, by id, after `after`, at most `limit`: an iterator
    /// fetching pages with the GIL released.
    #[pyo3(signature = (r#type, *, after=None, limit=None))]
    fn by_type(&self, r#type: String, after: Option<&Bound<'_, PyAny>>, limit: Option<usize>) -> PyResult<PyItemIter> {
        let after = match after.filter(|a| !a.is_none()) {
            Some(a) => Some(id_arg(Some(a))?.to_string()),
            None => None,
        };
        Ok(PyItemIter::new(
            self.view.clone(),
            Listing::ByType(r#type),
            after,
            limit,
        ))
    }

    /// Every readable item below `top` (None: the whole drive), children
    /// before parents ("children_first") or parents first: an iterator over
    /// one consistent snapshot, read with the GIL released.
    #[pyo3(signature = (top=None, *, order="children_first"))]
    fn walk(&self, py: Python<'_>, top: Option<&Bound<'_, PyAny>>, order: &str) -> PyResult<PyItemIter> {
        let top = id_arg(top)?;
        let order = quick(py, || walk_order(order))?;
        let items = blocking(py, || self.view.walk(top, order))?;
        Ok(PyItemIter::done(items))
    }

    /// Creates an item named `name` under `parent` (None: the root).
    #[pyo3(signature = (parent, name, *, r#type=None, permissions=None))]
    fn create<'py>(
        &self,
        py: Python<'py>,
        parent: Option<&Bound<'py, PyAny>>,
        name: String,
        r#type: Option<String>,
        permissions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let parent = id_arg(parent)?;
        let new = quick(py, || new_item(name, r#type, permissions))?;
        let item = blocking(py, || self.view.create(parent, &new))?;
        item_dict(py, &item)
    }

    /// Creates an item under the item at `parent_path`.
    #[pyo3(signature = (parent_path, name, *, r#type=None, permissions=None))]
    fn create_at<'py>(
        &self,
        py: Python<'py>,
        parent_path: &str,
        name: String,
        r#type: Option<String>,
        permissions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let new = quick(py, || new_item(name, r#type, permissions))?;
        let item = blocking(py, || self.view.create_at(parent_path, &new))?;
        item_dict(py, &item)
    }

    /// Creates the missing folders along `path`; returns every step's item.
    fn make_path<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyList>> {
        let items = blocking(py, || self.view.make_path(path))?;
        item_list(py, &items)
    }

    /// Moves an item under `new_parent` (None: the root), renamed if
    /// `new_name` is given, in one transaction.
    #[pyo3(signature = (id, new_parent, new_name=None))]
    fn move_item<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
        new_parent: Option<&Bound<'py, PyAny>>,
        new_name: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (id, new_parent) = (id_arg(Some(id))?, id_arg(new_parent)?);
        let item = blocking(py, || self.view.move_item(id, new_parent, new_name.as_deref()))?;
        item_dict(py, &item)
    }

    /// Renames an item within its parent.
    fn rename<'py>(&self, py: Python<'py>, id: &Bound<'py, PyAny>, new_name: &str) -> PyResult<Bound<'py, PyAny>> {
        let id = id_arg(Some(id))?;
        let item = blocking(py, || self.view.rename(id, new_name))?;
        item_dict(py, &item)
    }

    /// Deletes an item and everything below it; returns how many items.
    fn delete(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<u64> {
        let id = id_arg(Some(id))?;
        blocking(py, || self.view.delete(id))
    }

    /// Replaces an item's own permissions:
    /// `{"default": "read", "users": {"ann": "admin"}, "roles": {...}}`.
    fn set_permissions<'py>(
        &self,
        py: Python<'py>,
        id: Option<&Bound<'py, PyAny>>,
        permissions: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = id_arg(id)?;
        let permissions = quick(py, || Permissions::from_json(&from_py(permissions)?))?;
        let item = blocking(py, || self.view.set_permissions(id, &permissions))?;
        item_dict(py, &item)
    }

    /// Stores `data` (JSON-compatible) as `version` ("1.2.3"; default: the
    /// next patch) of a typed item; returns the version written. A version
    /// already stored raises keel.AlreadyExists unless `replace=True`.
    #[pyo3(signature = (id, data, version=None, *, replace=false))]
    fn set_data(
        &self,
        py: Python<'_>,
        id: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        version: Option<&str>,
        replace: bool,
    ) -> PyResult<String> {
        let id = id_arg(Some(id))?;
        let (data, version) = quick(py, || Ok((from_py(data)?, version_arg(version)?)))?;
        let written = blocking(py, || match (replace, version) {
            (true, Some(version)) => self.view.replace_data(id, &data, version),
            (true, None) => Err(replace_needs_version()),
            (false, _) => self.view.set_data(id, &data, version),
        })?;
        Ok(written.to_string())
    }

    /// `(version, data)` of an item: the current version, or `version`.
    #[pyo3(signature = (id, version=None))]
    fn get_data<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
        version: Option<&str>,
    ) -> PyResult<(String, Bound<'py, PyAny>)> {
        let id = id_arg(Some(id))?;
        let version = quick(py, || version_arg(version))?;
        let (version, data) = blocking(py, || self.view.get_data(id, version))?;
        Ok((version.to_string(), to_py(py, &data)?))
    }

    /// Every stored version of an item's data, newest first, as dicts.
    fn versions<'py>(&self, py: Python<'py>, id: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let id = id_arg(Some(id))?;
        let versions = blocking(py, || self.view.versions(id))?;
        let list = PyList::empty(py);
        for info in &versions {
            list.append(to_py(py, &info.to_json())?)?;
        }
        Ok(list)
    }

    /// Deletes one version; returns the current version afterwards (or None).
    fn delete_data(&self, py: Python<'_>, id: &Bound<'_, PyAny>, version: &str) -> PyResult<Option<String>> {
        let id = id_arg(Some(id))?;
        let version = quick(py, || Version::parse(version))?;
        let current = blocking(py, || self.view.delete_data(id, version))?;
        Ok(current.map(|v| v.to_string()))
    }

    /// Registers `schema` (a JSON Schema dict) as `version` of `type`'s
    /// schema. The same version again returns False; a lower one raises
    /// keel.Conflict; a higher one calls `migrate(item, version, data,
    /// from_schema, to_schema) -> new data` for every stored version of every
    /// item of the type, all in one transaction: if it raises, nothing
    /// changes. `migrate` runs on a keel thread, holding the GIL while it runs.
    #[pyo3(signature = (r#type, schema, version, migrate=None))]
    fn set_schema(
        &self,
        py: Python<'_>,
        r#type: &str,
        schema: &Bound<'_, PyAny>,
        version: u32,
        migrate: Option<Py<PyAny>>,
    ) -> PyResult<bool> {
        let schema = quick(py, || from_py(schema))?;
        if let Some(callable) = &migrate {
            refuse_uncallable(callable.bind(py))?;
        }
        blocking(py, || match &migrate {
            Some(callable) => {
                let mut call = |step: &Migration<'_>, data: Value| call_migration(callable, step, data);
                self.view.set_schema(r#type, &schema, version, Some(&mut call))
            }
            None => self.view.set_schema(r#type, &schema, version, None),
        })
    }

    /// `(version, schema)` registered for `type`, or None.
    fn schema<'py>(&self, py: Python<'py>, r#type: &str) -> PyResult<Option<(u32, Bound<'py, PyAny>)>> {
        let found = blocking(py, || self.view.schema(r#type))?;
        found
            .map(|(version, schema)| Ok((version, to_py(py, &schema)?)))
            .transpose()
    }

    /// A batch: `with drive.batch() as b:` — every call on `b` is one
    /// transaction, committed durably when the block ends without an
    /// exception and undone otherwise. Other writers wait while it is open.
    fn batch(&self) -> PyDriveBatch {
        PyDriveBatch {
            view: self.view.clone(),
            open: Arc::new(Mutex::new(None)),
        }
    }

    /// Checks the whole drive file in a child process; returns the report
    /// (see keel.verify_file). A damaged file is a report, never a crash.
    fn verify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let report = blocking(py, || self.drive.verify())?;
        to_py(py, &report.to_json())
    }

    /// Writes a consistent, compacted copy of the drive to `dest`.
    fn backup(&self, py: Python<'_>, dest: std::path::PathBuf) -> PyResult<()> {
        blocking(py, || self.drive.backup(&dest))
    }

    /// The storage map's size and use and the commit counters, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::stats::to_dict(py, &self.drive.env().stats())
    }

    fn __repr__(&self) -> String {
        let who = if self.view.is_checked() {
            format!(" as {:?}", self.view.user())
        } else {
            String::new()
        };
        format!("<keel.Drive {:?}{who}>", self.drive.path().display().to_string())
    }
}

/// Runs a Python migration callable on this (keel) thread.
fn call_migration(callable: &Py<PyAny>, step: &Migration<'_>, data: Value) -> keel::Result<Value> {
    let outcome = crate::run::attached(|py| -> PyResult<keel::Result<Value>> {
        let args = (
            to_py(py, &step.item.to_json())?,
            step.version.to_string(),
            to_py(py, &data)?,
            step.from_schema,
            step.to_schema,
        );
        let result = callable.bind(py).call1(args)?;
        Ok(from_py(&result))
    });
    match outcome {
        None => Err(Error::closed("the Python interpreter is shutting down")),
        Some(Ok(result)) => result,
        Some(Err(raised)) => Err(Error::invalid_argument(format!(
            "the migration callback raised {raised}"
        ))),
    }
}

/// What a [`PyItemIter`] pages through.
enum Listing {
    Children(ItemId),
    ByType(String),
    Done,
}

/// An iterator over item dicts, fetching a page at a time with the GIL
/// released (children, by type) or over a list read at once (walk).
#[pyclass(name = "ItemIterator", module = "keel")]
pub struct PyItemIter {
    view: Option<DriveView>,
    listing: Listing,
    after: Option<String>,
    remaining: Option<usize>,
    page: std::collections::VecDeque<Item>,
}

const PAGE: usize = 256;

impl PyItemIter {
    fn new(view: DriveView, listing: Listing, after: Option<String>, limit: Option<usize>) -> Self {
        PyItemIter {
            view: Some(view),
            listing,
            after,
            remaining: limit,
            page: Default::default(),
        }
    }

    fn done(items: Vec<Item>) -> Self {
        PyItemIter {
            view: None,
            listing: Listing::Done,
            after: None,
            remaining: None,
            page: items.into(),
        }
    }

    fn fetch(&mut self, py: Python<'_>) -> PyResult<()> {
        let want = self.remaining.map_or(PAGE, |left| left.min(PAGE));
        let Some(view) = self.view.as_ref().filter(|_| want > 0) else {
            self.listing = Listing::Done;
            return Ok(());
        };
        let after = self.after.clone();
        let page = match &self.listing {
            Listing::Children(parent) => blocking(py, || view.children(*parent, after.as_deref(), want))?,
            Listing::ByType(kind) => blocking(py, || {
                let after = after.as_deref().map(ItemId::parse).transpose()?;
                view.by_type(kind, after, want)
            })?,
            Listing::Done => Vec::new(),
        };
        if page.len() < want {
            self.listing = Listing::Done;
        }
        if let Some(last) = page.last() {
            self.after = Some(match self.listing {
                Listing::ByType(_) => last.id.to_string(),
                _ => last.name.clone(),
            });
        }
        if let Some(left) = self.remaining.as_mut() {
            *left -= page.len();
        }
        self.page.extend(page);
        Ok(())
    }
}

#[pymethods]
impl PyItemIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        if self.page.is_empty() && !matches!(self.listing, Listing::Done) {
            self.fetch(py)?;
        }
        match self.page.pop_front() {
            Some(item) => item_dict(py, &item).map(Some),
            None => Ok(None),
        }
    }
}

/// A drive batch for a `with` block (see `Drive.batch`).
#[pyclass(name = "DriveBatch", module = "keel", frozen)]
pub struct PyDriveBatch {
    view: DriveView,
    open: Arc<Mutex<Option<OpenBatch>>>,
}

impl PyDriveBatch {
    fn run<T: Send + 'static>(
        &self,
        py: Python<'_>,
        call: impl FnOnce(&mut keel::drive::Batch<'_, '_>) -> keel::Result<T> + Send + 'static,
    ) -> PyResult<T> {
        let open = self.open.clone();
        blocking(py, move || match open.lock().as_ref() {
            Some(batch) => batch.run(call),
            None => Err(Error::closed("the batch is not open: use it in a `with` block")),
        })
    }
}

#[pymethods]
impl PyDriveBatch {
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let py = slf.py();
        let this = slf.get();
        let begun = blocking(py, || this.view.begin_batch())?;
        let previous = this.open.lock().replace(begun);
        if let Some(previous) = previous {
            blocking(py, move || {
                previous.abort();
                Ok(())
            })?;
        }
        Ok(slf)
    }

    #[pyo3(signature = (exc_type, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let batch = self.open.lock().take();
        let failed = exc_type.is_some_and(|t| !t.is_none());
        if let Some(batch) = batch {
            blocking(py, move || {
                if failed {
                    batch.abort();
                    Ok(())
                } else {
                    batch.commit()
                }
            })?;
        }
        Ok(false)
    }

    /// See Drive.get.
    #[pyo3(signature = (id, r#type=None))]
    fn get<'py>(&self, py: Python<'py>, id: &Bound<'py, PyAny>, r#type: Option<String>) -> PyResult<Bound<'py, PyAny>> {
        let id = id_arg(Some(id))?;
        let item = self.run(py, move |b| match &r#type {
            Some(kind) => b.get_typed(id, kind),
            None => b.get(id),
        })?;
        item_dict(py, &item)
    }

    /// See Drive.resolve.
    fn resolve<'py>(&self, py: Python<'py>, path: String) -> PyResult<Bound<'py, PyList>> {
        let items = self.run(py, move |b| b.resolve(&path))?;
        item_list(py, &items)
    }

    /// See Drive.children (a list here, read inside the batch).
    #[pyo3(signature = (parent=None, *, after=None, limit=None))]
    fn children<'py>(
        &self,
        py: Python<'py>,
        parent: Option<&Bound<'py, PyAny>>,
        after: Option<String>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let parent = id_arg(parent)?;
        let items = self.run(py, move |b| {
            b.children(parent, after.as_deref(), limit.unwrap_or(usize::MAX))
        })?;
        item_list(py, &items)
    }

    /// See Drive.create.
    #[pyo3(signature = (parent, name, *, r#type=None, permissions=None))]
    fn create<'py>(
        &self,
        py: Python<'py>,
        parent: Option<&Bound<'py, PyAny>>,
        name: String,
        r#type: Option<String>,
        permissions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let parent = id_arg(parent)?;
        let new = quick(py, || new_item(name, r#type, permissions))?;
        let item = self.run(py, move |b| b.create(parent, &new))?;
        item_dict(py, &item)
    }

    /// See Drive.create_at.
    #[pyo3(signature = (parent_path, name, *, r#type=None, permissions=None))]
    fn create_at<'py>(
        &self,
        py: Python<'py>,
        parent_path: String,
        name: String,
        r#type: Option<String>,
        permissions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let new = quick(py, || new_item(name, r#type, permissions))?;
        let item = self.run(py, move |b| b.create_at(&parent_path, &new))?;
        item_dict(py, &item)
    }

    /// See Drive.make_path.
    fn make_path<'py>(&self, py: Python<'py>, path: String) -> PyResult<Bound<'py, PyList>> {
        let items = self.run(py, move |b| b.make_path(&path))?;
        item_list(py, &items)
    }

    /// See Drive.move_item.
    #[pyo3(signature = (id, new_parent, new_name=None))]
    fn move_item<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
        new_parent: Option<&Bound<'py, PyAny>>,
        new_name: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (id, new_parent) = (id_arg(Some(id))?, id_arg(new_parent)?);
        let item = self.run(py, move |b| b.move_item(id, new_parent, new_name.as_deref()))?;
        item_dict(py, &item)
    }

    /// See Drive.rename.
    fn rename<'py>(&self, py: Python<'py>, id: &Bound<'py, PyAny>, new_name: String) -> PyResult<Bound<'py, PyAny>> {
        let id = id_arg(Some(id))?;
        let item = self.run(py, move |b| b.rename(id, &new_name))?;
        item_dict(py, &item)
    }

    /// See Drive.delete.
    fn delete(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<u64> {
        let id = id_arg(Some(id))?;
        self.run(py, move |b| b.delete(id))
    }

    /// See Drive.set_permissions.
    fn set_permissions<'py>(
        &self,
        py: Python<'py>,
        id: Option<&Bound<'py, PyAny>>,
        permissions: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = id_arg(id)?;
        let permissions = quick(py, || Permissions::from_json(&from_py(permissions)?))?;
        let item = self.run(py, move |b| b.set_permissions(id, &permissions))?;
        item_dict(py, &item)
    }

    /// See Drive.set_data.
    #[pyo3(signature = (id, data, version=None, *, replace=false))]
    fn set_data(
        &self,
        py: Python<'_>,
        id: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        version: Option<&str>,
        replace: bool,
    ) -> PyResult<String> {
        let id = id_arg(Some(id))?;
        let (data, version) = quick(py, || Ok((from_py(data)?, version_arg(version)?)))?;
        let written = self.run(py, move |b| match (replace, version) {
            (true, Some(version)) => b.replace_data(id, &data, version),
            (true, None) => Err(replace_needs_version()),
            (false, _) => b.set_data(id, &data, version),
        })?;
        Ok(written.to_string())
    }

    /// See Drive.get_data.
    #[pyo3(signature = (id, version=None))]
    fn get_data<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
        version: Option<&str>,
    ) -> PyResult<(String, Bound<'py, PyAny>)> {
        let id = id_arg(Some(id))?;
        let version = quick(py, || version_arg(version))?;
        let (version, data) = self.run(py, move |b| b.get_data(id, version))?;
        Ok((version.to_string(), to_py(py, &data)?))
    }

    /// See Drive.delete_data.
    fn delete_data(&self, py: Python<'_>, id: &Bound<'_, PyAny>, version: &str) -> PyResult<Option<String>> {
        let id = id_arg(Some(id))?;
        let version = quick(py, || Version::parse(version))?;
        let current = self.run(py, move |b| b.delete_data(id, version))?;
        Ok(current.map(|v| v.to_string()))
    }
}
