//! Python lists that templates change in place. jinja2 lets a template call
//! `list.append(x)` and `list.pop(0)` on a list held in a `namespace()`
//! (Kimi K2's templates queue tool-call ids so); minijinja's lists cannot
//! change. Lists given to `namespace(...)` become a [`PyList`], which can.

use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr};
use minijinja::{Error, ErrorKind, State, Value};
use parking_lot::Mutex;

#[derive(Debug, Default)]
pub(super) struct PyList(Mutex<Vec<Value>>);

impl Object for PyList {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let items = self.0.lock();
        let index = i64::try_from(key.clone()).ok()?;
        let index = if index < 0 { items.len() as i64 + index } else { index };
        usize::try_from(index).ok().and_then(|i| items.get(i).cloned())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.lock().clone())
    }

    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let mut items = self.0.lock();
        match (method, args) {
            ("append", [item]) => {
                items.push(item.clone());
                Ok(Value::from(()))
            }
            ("pop", []) => items.pop().ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "pop from empty list")),
            ("pop", [index]) => {
                let index = i64::try_from(index.clone())?;
                let index = if index < 0 { items.len() as i64 + index } else { index };
                match usize::try_from(index).ok().filter(|i| *i < items.len()) {
                    Some(i) => Ok(items.remove(i)),
                    None => Err(Error::new(ErrorKind::InvalidOperation, "pop index out of range")),
                }
            }
            ("extend", [more]) => {
                items.extend(more.try_iter()?);
                Ok(Value::from(()))
            }
            _ => Err(Error::new(ErrorKind::UnknownMethod, format!("list has no method named {method}"))),
        }
    }
}

/// jinja2's `namespace(...)`, whose list values can change in place.
pub(super) fn namespace(defaults: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let mutable = |v: Value| match v.kind() {
        minijinja::value::ValueKind::Seq if v.as_object().is_none_or(|o| o.downcast_ref::<PyList>().is_none()) => {
            Ok::<_, Error>(Value::from_object(PyList(Mutex::new(v.try_iter()?.collect()))))
        }
        _ => Ok(v),
    };
    let mut merged: Vec<(String, Value)> = Vec::new();
    if let Some(defaults) = defaults {
        for key in defaults.try_iter()? {
            let value = defaults.get_item(&key)?;
            merged.push((key.to_string(), mutable(value)?));
        }
    }
    for key in kwargs.args() {
        merged.push((key.to_string(), mutable(kwargs.get::<Value>(key)?)?));
    }
    kwargs.assert_all_used()?;
    let map: std::collections::BTreeMap<String, Value> = merged.into_iter().collect();
    minijinja::functions::namespace(Some(Value::from(map)))
}
