//! Receivers defined through the API, as the API reads them (the rows live in
//! `store::receivers`, which the writer and startup also use).

use crate::store::receivers::{get, list, StoredReceiver};
use crate::store::{Store, StoreError};

impl Store {
    /// Every receiver stored through the API, by name.
    pub async fn stored_receivers(&self) -> Result<Vec<StoredReceiver>, StoreError> {
        self.read(list).await
    }

    /// One receiver stored through the API.
    pub async fn stored_receiver(
        &self,
        name: String,
    ) -> Result<Option<StoredReceiver>, StoreError> {
        self.read(move |c| get(c, &name)).await
    }
}
