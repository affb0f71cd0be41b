//! The in-memory index: every account, resource and token, rebuilt from the
//! store at start and updated by every committed [`Change`]. Authorize reads
//! only this.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::pb::store::TokenRecord;
use crate::ratelimit::Budget;

use crate::model::{Grant, Kind, Level, ResourceKey};
use crate::token::DigestKey;

mod account;
pub mod change;
mod ids;
pub mod nodes;
mod state;
#[cfg(test)]
mod tests;

pub use account::{AccountState, ResourceNode};

pub use change::Change;
pub use ids::IdSet;
pub use state::{budget_key, newer_use, TokenState, ID_LIMIT};

/// The chain from a resource up to its account: at most 3 links.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a> {
    links: [(Kind, &'a str); 3],
    len: usize,
}

impl<'a> Chain<'a> {
    /// The links, the resource first and the account last.
    pub fn links(&self) -> &[(Kind, &'a str)] {
        &self.links[..self.len]
    }

    /// The highest level that `grants` give on this resource (a grant on an
    /// ancestor covers its descendants).
    pub fn level_from(&self, grants: &[Grant]) -> Option<Level> {
        let mut best = None;
        for g in grants {
            if self
                .links()
                .iter()
                .any(|&(k, id)| g.resource.kind == k && &*g.resource.id == id)
            {
                best = best.max(Some(g.level));
            }
        }
        best
    }
}

/// Tokens by id, in a table indexed by the id itself: pages of
/// [`TokenTable::PAGE`] entries, found by the id's quotient in a
/// directory. Ids are handed out densely from 1, so a lookup is two
/// bounds checks and two loads (the directory is 26 bytes a page: 6 KiB
/// for a million tokens, in cache), with no hashing. Tokens live in the
/// pages themselves (no allocation of their own): a deleted token leaves
/// an empty entry of the same size until every token of its page is gone,
/// and then the page is given back. So the memory follows the tokens
/// held: a token far above the rest (an id counter moved far ahead by a
/// damaged record) costs at most one page and 26 bytes a page of ids below
/// it in the directory (27 MiB at most), never an entry for every id below
/// it.
#[derive(Debug, Default)]
pub struct TokenTable {
    /// Pages by `id / PAGE`, each allocated for [`TokenTable::PAGE`]
    /// entries and written only up to its highest entry used (the rest of
    /// the allocation is never touched, so never resident); empty (no
    /// allocation) for a page holding no token. In the directory itself,
    /// not behind a box: a lookup follows one pointer.
    pages: Vec<Vec<Option<TokenState>>>,
    /// How many tokens each page holds.
    held: Vec<u16>,
    len: usize,
}

impl TokenTable {
    /// Ids at or above this are not kept in the table (they never occur:
    /// ids are issued from 1 upwards); inserting one is refused.
    const MAX_ID: u64 = state::ID_LIMIT;

    /// Entries in a page: 4,095 of 176 bytes and the allocator's 16-byte
    /// header fill 176 of the system's 4 KiB pages to the byte (4,096
    /// entries took one more when glibc gives a page a mapping of its
    /// own, as on a follower: 1 MiB at 1 M tokens). The division by it is
    /// a multiply and a shift; a million tokens take 245 pages.
    pub const PAGE: usize = 4095;

    /// Page and entry of `id`.
    fn at(id: u64) -> Option<(usize, usize)> {
        let i = usize::try_from(id).ok().filter(|_| id < Self::MAX_ID)?;
        Some((i / Self::PAGE, i % Self::PAGE))
    }

    /// The token with this id.
    #[inline]
    pub fn get(&self, id: &u64) -> Option<&TokenState> {
        let (p, i) = Self::at(*id)?;
        self.pages.get(p)?.get(i)?.as_ref()
    }

    /// The token with this id, mutably.
    pub fn get_mut(&mut self, id: &u64) -> Option<&mut TokenState> {
        let (p, i) = Self::at(*id)?;
        self.pages.get_mut(p)?.get_mut(i)?.as_mut()
    }

    /// Inserts or replaces a token; ids at or above 2^32 are ignored.
    pub fn insert(&mut self, id: u64, state: TokenState) {
        let Some((p, i)) = Self::at(id) else { return };
        debug_assert_eq!(state.id(), id, "a token is kept under its own id");
        if p >= self.pages.len() {
            self.pages.resize_with(p + 1, Vec::new);
            self.held.resize(p + 1, 0);
        }
        let page = &mut self.pages[p];
        if page.capacity() == 0 {
            *page = Vec::with_capacity(Self::PAGE);
        }
        if i >= page.len() {
            // Within the capacity: never moves the page.
            page.resize_with(i + 1, || None);
        }
        let slot = &mut page[i];
        if slot.is_none() {
            self.held[p] += 1;
            self.len += 1;
        }
        *slot = Some(state);
    }

    /// Removes a token; its page goes when it was the page's last.
    pub fn remove(&mut self, id: &u64) -> Option<TokenState> {
        let (p, i) = Self::at(*id)?;
        let old = self.pages.get_mut(p)?.get_mut(i)?.take()?;
        self.held[p] -= 1;
        self.len -= 1;
        if self.held[p] == 0 {
            self.pages[p] = Vec::new();
            let kept = self.held.iter().rposition(|&n| n > 0).map_or(0, |p| p + 1);
            self.pages.truncate(kept);
            self.held.truncate(kept);
        }
        Some(old)
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// How many entries the table's pages hold, empty ones included (its
    /// memory is this many entries).
    pub fn slots(&self) -> usize {
        self.pages.iter().filter(|p| p.capacity() > 0).count() * Self::PAGE
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One past the largest id the table could hold now (the end of its
    /// last page): no token has an id at or above it.
    pub fn id_end(&self) -> u64 {
        (self.pages.len() * Self::PAGE) as u64
    }

    /// Every token, by id.
    pub fn values(&self) -> impl Iterator<Item = &TokenState> {
        self.range(0, u64::MAX)
    }

    /// Up to `n` tokens with ids in `from..to`, by id, and the id to go on
    /// from (`to` when none is left): the table a slice at a time, each
    /// under a short hold of the index's lock.
    pub fn slice(&self, from: u64, to: u64, n: usize) -> (Vec<&TokenState>, u64) {
        let mut tokens = Vec::with_capacity(n.min(self.len));
        for t in self.range(from, to) {
            if tokens.len() == n {
                return (tokens, t.id());
            }
            tokens.push(t);
        }
        (tokens, to)
    }

    /// The tokens with ids in `from..to`, by id. A page holding none
    /// costs one check, so a range of ids far wider than the tokens in it
    /// is walked at the cost of the directory.
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = &TokenState> {
        // Ids below `id_end` fit a usize (the table holds their pages).
        let fit = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let end = self.id_end();
        let (from, to) = (fit(from.min(end)), fit(to.min(end).max(from.min(end))));
        let cap = Self::PAGE;
        // Entry bounds within each page, checked once a page, not per token.
        let first = from / cap;
        self.pages[first..to.div_ceil(cap)]
            .iter()
            .enumerate()
            .flat_map(move |(k, page)| {
                let start = (first + k) * cap;
                let lo = from.saturating_sub(start).min(cap);
                let hi = (to - start).min(cap).min(page.len());
                page.get(lo..hi).unwrap_or_default().iter().flatten()
            })
    }
}

/// Where a resource is, as seen from one account.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// Registered in the account; its chain to the account.
    Found(Chain<'a>),
    /// Registered in another account (or another account's ACCOUNT resource).
    OtherAccount,
    /// Registered nowhere.
    Unknown,
}

/// Non-canonical domain ids a refusal to start names (the rest are counted).
const DOMAIN_PROBLEMS_SHOWN: usize = 20;

/// Everything keyward knows, in memory. Maps use FxHash: their keys are
/// token ids keyward assigns and resource ids admins register, never chosen
/// by an unauthenticated caller, so a fast non-DoS-resistant hash is safe.
#[derive(Debug)]
pub struct Index {
    /// Accounts by id.
    pub accounts: BTreeMap<u64, AccountState>,
    /// Tokens by id.
    pub tokens: TokenTable,
    /// How many accounts registered each (kind, id); tells WRONG_ACCOUNT
    /// from UNKNOWN_RESOURCE.
    owners: [HashMap<Box<str>, u32>; 4],
    /// Next account id to hand out.
    pub next_account_id: u64,
    /// Next token id to hand out.
    pub next_token_id: u64,
    /// The digest key, to decide which stored digests are valid.
    key: DigestKey,
}

impl Index {
    /// An empty index.
    pub fn new(key: DigestKey) -> Self {
        Self {
            accounts: BTreeMap::new(),
            tokens: TokenTable::default(),
            owners: Default::default(),
            next_account_id: 1,
            next_token_id: 1,
            key,
        }
    }

    /// The digest key.
    pub fn key(&self) -> &DigestKey {
        &self.key
    }

    /// Applies one committed change.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::PutAccount(a) => {
                self.accounts
                    .entry(a.id)
                    .or_insert_with(|| AccountState::new(a.id))
                    .set(a);
            }
            Change::PutResource(r) => {
                let (Some(kind), Some(acct)) = (
                    Kind::from_wire(r.resource_type),
                    self.accounts.get_mut(&r.account_id),
                ) else {
                    return;
                };
                let parent =
                    (r.parent_type == Kind::Project.to_wire()).then(|| r.parent_id.as_str().into());
                if acct.resources[kind.slot()]
                    .insert(r.id.as_str().into(), ResourceNode { parent })
                    .is_none()
                {
                    *self.owners[kind.slot()]
                        .entry(r.id.as_str().into())
                        .or_insert(0) += 1;
                }
            }
            Change::DeleteResource { account_id, key } => {
                let Some(acct) = self.accounts.get_mut(account_id) else {
                    return;
                };
                if acct.resources[key.kind.slot()]
                    .remove(key.id.as_str())
                    .is_some()
                {
                    let owners = &mut self.owners[key.kind.slot()];
                    if let Some(n) = owners.get_mut(key.id.as_str()) {
                        *n -= 1;
                        if *n == 0 {
                            owners.remove(key.id.as_str());
                        }
                    }
                }
            }
            Change::PutToken(r) if !TokenState::fits(r) || r.id >= self.next_token_id => {
                // Ids keyward never issues (every mint moves the counter
                // first): a damaged store, snapshot or change row. Not held,
                // the table does not grow toward the id, and no older state
                // of the token is served in its place. Said for the 1st,
                // 2nd, 4th, 8th ... such record of the process: a damaged
                // snapshot of a million says it 21 times, not a million.
                static IGNORED: AtomicU64 = AtomicU64::new(0);
                let n = IGNORED.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        token_id = r.id,
                        next_token_id = self.next_token_id,
                        ignored_so_far = n,
                        "a token record with an id keyward never issued is ignored"
                    );
                }
                self.apply(&Change::DeleteToken(r.id));
            }
            Change::PutToken(r) => {
                let mut state = TokenState::from_record(r, &self.key);
                if let Some(old) = self.tokens.get(&r.id) {
                    // Keep what the hot path learnt since the record was
                    // read: the newer use wins, with the node that saw it.
                    let (used, by) = newer_use(
                        old.last_use(),
                        (
                            r.last_used_at_ms,
                            state.last_used_by.load(Ordering::Relaxed),
                        ),
                    );
                    state.last_used_ms = AtomicI64::new(used);
                    state.last_used_by = AtomicU32::new(by);
                    state.keep_saved_mark(old);
                    if state.digest.is_none() {
                        // Keep the digest learnt here. It is unsaved only if
                        // the record carries none: a digest under another
                        // node's key is that node's, and writing ours over it
                        // would have the two nodes overwrite each other.
                        state.digest = old.digest;
                        state.digest_unsaved =
                            AtomicBool::new(old.digest.is_some() && r.verified_digest.is_empty());
                    }
                }
                state.budget = self.budget_for(r, state.budget.take());
                if let Some(acct) = self.accounts.get_mut(&r.account_id) {
                    acct.tokens.insert(r.id);
                }
                self.tokens.insert(r.id, state);
            }
            Change::DeleteToken(id) => {
                if let Some(t) = self.tokens.remove(id) {
                    if let Some(acct) = self.accounts.get_mut(&t.account_id()) {
                        acct.tokens.remove(*id);
                    }
                }
            }
            Change::Counters {
                next_account_id,
                next_token_id,
            } => {
                self.next_account_id = *next_account_id;
                self.next_token_id = *next_token_id;
            }
        }
    }

    /// The budget a token written as `r` holds, given `fresh` (built from
    /// the record alone): the budget it already had when its limits are
    /// unchanged (so what the hot path spent since the record was read
    /// stays spent), a budget carrying the unchanged limits' state when
    /// they changed, or, for a new token replacing another by a reset with
    /// the same limits, the old token's budget: the two share ONE budget
    /// during the grace period, so a reset cannot double it. The record's
    /// saved state never makes a budget fuller.
    fn budget_for(&self, r: &TokenRecord, fresh: Option<Arc<Budget>>) -> Option<Arc<Budget>> {
        let fresh = fresh?;
        let same = |t: &TokenState| {
            t.budget
                .as_ref()
                .filter(|b| b.same_limits(fresh.specs(), fresh.names()))
                .cloned()
        };
        let restore = |b: &Budget| {
            if r.rate_full_at_ms.len() == b.specs().len() {
                b.restore(&r.rate_full_at_ms);
            }
        };
        if let Some(old) = self.tokens.get(&r.id) {
            if let Some(b) = same(old) {
                restore(&b);
                return Some(b);
            }
            if let Some(b) = &old.budget {
                let carried = b.carried(fresh.specs()).with_names(fresh.names().to_vec());
                restore(&carried);
                carried.owe_back(b);
                return Some(Arc::new(carried));
            }
            return Some(fresh);
        }
        if r.replaces != 0 {
            if let Some(b) = self.tokens.get(&r.replaces).and_then(same) {
                restore(&b);
                return Some(b);
            }
        }
        Some(fresh)
    }

    /// Finds a resource from the point of view of `account`.
    pub fn lookup<'a>(&'a self, account: &'a AccountState, kind: Kind, id: &'a str) -> Lookup<'a> {
        let acct_link = (Kind::Account, &*account.id_str);
        match kind {
            Kind::Account => {
                if id == &*account.id_str {
                    Lookup::Found(Chain {
                        links: [acct_link; 3],
                        len: 1,
                    })
                } else if id
                    .parse::<u64>()
                    .is_ok_and(|n| self.accounts.contains_key(&n))
                {
                    Lookup::OtherAccount
                } else {
                    Lookup::Unknown
                }
            }
            _ => match account.resources[kind.slot()].get_key_value(id) {
                Some((own_id, node)) => match (kind, &node.parent) {
                    (Kind::Sandbox, Some(project)) => Lookup::Found(Chain {
                        links: [(Kind::Sandbox, own_id), (Kind::Project, project), acct_link],
                        len: 3,
                    }),
                    _ => Lookup::Found(Chain {
                        links: [(kind, own_id), acct_link, acct_link],
                        len: 2,
                    }),
                },
                None if self.owners[kind.slot()].contains_key(id) => Lookup::OtherAccount,
                None => Lookup::Unknown,
            },
        }
    }

    /// Whether any account registered this resource (accounts: whether the
    /// account exists).
    pub fn is_registered(&self, kind: Kind, id: &str) -> bool {
        match kind {
            Kind::Account => id
                .parse::<u64>()
                .is_ok_and(|n| self.accounts.contains_key(&n)),
            _ => self.owners[kind.slot()].contains_key(id),
        }
    }

    /// Checks that every DOMAIN id held is in its canonical spelling
    /// ([`crate::model::canonical_host`]), as every write since ids became
    /// canonical makes it, so that Authorize's canonical lookups find them
    /// and no two accounts hold spellings of one domain. A store written
    /// before then may hold `EXAMPLE.com` beside another account's
    /// `example.com`: the answer names every such record (with the other
    /// spellings of the same domain and their accounts), and the caller
    /// refuses to start rather than merge or guess an owner. One pass over
    /// the domains; no allocation unless something is wrong.
    pub fn check_domain_ids(&self) -> Result<(), String> {
        use crate::model::canonical_host;
        let slot = Kind::Domain.slot();
        // Canonical spelling → every (account, stored spelling) of it, for
        // the domains that have a non-canonical spelling; and ids that are
        // not host names at all.
        let mut groups: BTreeMap<String, Vec<(u64, &str)>> = BTreeMap::new();
        let mut not_hosts: Vec<String> = Vec::new();
        for acct in self.accounts.values() {
            for id in acct.resources[slot].keys() {
                match canonical_host(id) {
                    Ok(c) if *c == **id => {}
                    Ok(c) => groups
                        .entry(c.into_owned())
                        .or_default()
                        .push((acct.id, id)),
                    Err(e) => not_hosts.push(format!(
                        "account {} holds domain `{id}`, which is not a host name ({e})",
                        acct.id
                    )),
                }
            }
        }
        if groups.is_empty() && not_hosts.is_empty() {
            return Ok(());
        }
        // The canonical spellings that are stored as such, beside the others.
        for acct in self.accounts.values() {
            for id in acct.resources[slot].keys() {
                if let Some(group) = groups.get_mut(&**id) {
                    group.push((acct.id, id));
                }
            }
        }
        let mut problems = not_hosts;
        for (canonical, mut held) in groups {
            held.sort_unstable();
            let each: Vec<String> = held
                .iter()
                .map(|(a, id)| format!("account {a} holds `{id}`"))
                .collect();
            problems.push(if held.len() > 1 {
                format!(
                    "{} spellings of domain `{canonical}`: {}",
                    held.len(),
                    each.join(", ")
                )
            } else {
                format!(
                    "{}, whose canonical spelling is `{canonical}`",
                    each.join("")
                )
            });
        }
        let more = problems.len().saturating_sub(DOMAIN_PROBLEMS_SHOWN);
        problems.truncate(DOMAIN_PROBLEMS_SHOWN);
        let mut msg = problems.join("; ");
        if more > 0 {
            let _ = std::fmt::Write::write_fmt(&mut msg, format_args!("; and {more} more"));
        }
        Err(msg)
    }

    /// The highest level `grants` give on `resource` in `account`, if any.
    pub fn level_on(
        &self,
        account: &AccountState,
        grants: &[Grant],
        resource: &ResourceKey,
    ) -> Option<Level> {
        match self.lookup(account, resource.kind, &resource.id) {
            Lookup::Found(chain) => chain.level_from(grants),
            _ => None,
        }
    }
}
