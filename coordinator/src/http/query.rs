//! Query strings: parsed strictly, so a typo in a filter is a 400 that names it
//! rather than a filter silently ignored.

use super::ApiError;

/// The `key=value` pairs of a query string, each key one of `allowed`.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {k:?}; this endpoint takes {}",
                allowed.join(", ")
            )));
        }
        Ok(Params(pairs))
    }

    /// Every value given for `key`.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The one value of `key`, if given (twice is an error: which one was meant?).
    pub fn one<'a>(&'a self, key: &'a str) -> Result<Option<&'a str>, ApiError> {
        let mut it = self.all(key);
        let first = it.next();
        if it.next().is_some() {
            return Err(ApiError::bad_request(format!(
                "query parameter {key:?} given more than once"
            )));
        }
        Ok(first)
    }

    /// `key` as a number in `min..=max`, `default` when absent.
    pub fn number(
        &self,
        key: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, ApiError> {
        let Some(v) = self.one(key)? else {
            return Ok(default);
        };
        match v.parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "{key} must be a whole number from {min} to {max}, not {v:?}"
            ))),
        }
    }

    /// `key`, which must be one of `choices` when given.
    pub fn choice(&self, key: &str, choices: &[&str]) -> Result<Option<String>, ApiError> {
        match self.one(key)? {
            None => Ok(None),
            Some(v) if choices.contains(&v) => Ok(Some(v.to_owned())),
            Some(v) => Err(ApiError::bad_request(format!(
                "{key} must be one of {}, not {v:?}",
                choices.join(", ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Params;

    #[test]
    fn strict_parsing_names_what_is_wrong() {
        let p = Params::parse(
            Some("state=online&label=room%3Dlab&label=a=b"),
            &["state", "label"],
        )
        .expect("valid");
        assert_eq!(p.one("state").unwrap(), Some("online"));
        assert_eq!(p.all("label").collect::<Vec<_>>(), ["room=lab", "a=b"]);
        assert!(p
            .one("label")
            .unwrap_err()
            .reason
            .contains("more than once"));

        let e = Params::parse(Some("stat=online"), &["state"])
            .err()
            .expect("unknown key");
        assert!(e.reason.contains("\"stat\""), "{}", e.reason);

        let p = Params::parse(Some("limit=0&offset=x"), &["limit", "offset"]).expect("valid");
        assert!(p
            .number("limit", 100, 1, 1000)
            .unwrap_err()
            .reason
            .contains("1 to 1000"));
        assert!(p.number("offset", 0, 0, 10).is_err());
        assert_eq!(p.number("other", 7, 0, 10).unwrap(), 7);
        let p = Params::parse(Some("state=sleeping"), &["state"]).expect("valid");
        assert!(p
            .choice("state", &["online"])
            .unwrap_err()
            .reason
            .contains("online"));
        assert!(Params::parse(None, &[]).is_ok());
    }
}
