//! Cursor paging (architecture §7): `limit` and `cursor` in, `{"items", "next_cursor"}` out.
//!
//! The cursor is the sort key of the last item returned (a UUIDv7 id, which is
//! time-ordered, or a version number), so the next page is `key < cursor`: stable while
//! rows are added, and served by the `(workspace_id, id DESC)` indexes.

use std::fmt::Display;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// One page's worth of a request: how many items, starting after which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<K> {
    pub limit: i64,
    pub cursor: Option<K>,
}

impl<K: FromStr> Page<K> {
    /// Reads the raw query parameters; an empty parameter counts as absent.
    pub fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<Self, ApiError> {
        let limit = match limit.filter(|text| !text.is_empty()) {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("`limit` must be a number from 1 to {MAX_LIMIT}"),
                    )
                })?,
        };
        let cursor = match cursor.filter(|text| !text.is_empty()) {
            None => None,
            Some(text) => Some(text.parse::<K>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    "`cursor` is malformed: pass the `next_cursor` of the previous page",
                )
            })?),
        };
        Ok(Self { limit, cursor })
    }

    /// Rows to fetch: one more than the page, to learn whether a next page exists.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }
}

/// The paging parameters of a list endpoint, as they come in the query string.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn page<K: FromStr>(&self) -> Result<Page<K>, ApiError> {
        Page::parse(self.limit.as_deref(), self.cursor.as_deref())
    }
}

/// Every list of the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> List<T> {
    /// Builds a page from up to [`Page::fetch`] rows, keyed by `key`.
    pub fn new<K, C: Display>(mut rows: Vec<T>, page: &Page<K>, key: impl Fn(&T) -> C) -> Self {
        let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| key(last).to_string())
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }
}

/// An optional id in the query string; malformed is a 400 naming the parameter.
pub fn parse_id(name: &str, text: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    match text.filter(|text| !text.is_empty()) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request("invalid_query", format!("`{name}` is not a UUID"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_are_bounded() {
        let page = Page::<Uuid>::parse(None, None).expect("defaults");
        assert_eq!(
            page,
            Page {
                limit: 50,
                cursor: None
            }
        );
        assert_eq!(
            Page::<Uuid>::parse(Some("200"), None).expect("max").limit,
            200
        );
        assert_eq!(
            Page::<Uuid>::parse(Some(""), Some(""))
                .expect("empty")
                .limit,
            50
        );
        for bad in ["0", "201", "-1", "ten"] {
            let error = Page::<Uuid>::parse(Some(bad), None).expect_err(bad);
            assert_eq!(error.code(), "invalid_query");
        }
    }

    #[test]
    fn cursors_are_parsed_as_their_key_type() {
        let id = Uuid::now_v7();
        let page = Page::<Uuid>::parse(Some("2"), Some(&id.to_string())).expect("uuid cursor");
        assert_eq!(page.cursor, Some(id));
        assert_eq!(page.fetch(), 3);
        assert!(Page::<Uuid>::parse(None, Some("not-a-uuid")).is_err());
        assert_eq!(
            Page::<i32>::parse(None, Some("7"))
                .expect("version cursor")
                .cursor,
            Some(7)
        );
    }

    #[test]
    fn the_extra_row_becomes_the_next_cursor() {
        let page = Page::<i32> {
            limit: 2,
            cursor: None,
        };
        let list = List::new(vec![9, 8, 7], &page, |n| *n);
        assert_eq!(list.items, vec![9, 8]);
        assert_eq!(list.next_cursor.as_deref(), Some("8"));
        let list = List::new(vec![9, 8], &page, |n| *n);
        assert_eq!(list.next_cursor, None);
    }

    #[test]
    fn ids_in_the_query_must_be_uuids() {
        assert_eq!(parse_id("scenario_id", None).expect("absent"), None);
        assert!(parse_id("scenario_id", Some("42")).is_err());
        let id = Uuid::now_v7();
        assert_eq!(
            parse_id("scenario_id", Some(&id.to_string())).expect("valid"),
            Some(id)
        );
    }
}
