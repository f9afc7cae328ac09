//! The in-memory Grafana database: organizations, users, memberships, datasources and
//! dashboards, with ids handed out like Grafana's auto-increment tables (never reused).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// An organization role. Grafana: `pkg/services/org/model.go` (`RoleType`: `Viewer`,
/// `Editor`, `Admin`, and `None` since Grafana 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// `None`: a member without basic permissions.
    None,
    /// `Viewer`.
    Viewer,
    /// `Editor`.
    Editor,
    /// `Admin`.
    Admin,
}

impl Role {
    /// Grafana's `RoleType.IsValid`: exactly these spellings.
    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "None" => Some(Role::None),
            "Viewer" => Some(Role::Viewer),
            "Editor" => Some(Role::Editor),
            "Admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The spelling Grafana uses in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "None",
            Role::Viewer => "Viewer",
            Role::Editor => "Editor",
            Role::Admin => "Admin",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Org {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub id: i64,
    pub login: String,
    pub email: String,
    pub name: String,
    /// `None` for users that can only sign in through the auth proxy.
    pub password: Option<String>,
    pub is_admin: bool,
    /// The user's current organization (`user.org_id` in Grafana).
    pub org_id: i64,
    pub is_external: bool,
    /// Signed in through an auth module whose org roles Grafana syncs (LDAP, OAuth, SAML
    /// without `skip_org_role_sync`): its org roles cannot be changed through the API.
    pub externally_synced: bool,
    pub created: String,
    pub updated: String,
}

/// What [`Db::insert_user`] needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewUser<'a> {
    pub login: &'a str,
    pub email: &'a str,
    pub name: &'a str,
    /// `None`: signs in through the auth proxy only.
    pub password: Option<&'a str>,
    pub org_id: i64,
    pub role: Role,
    pub is_external: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct DataSource {
    pub id: i64,
    pub org_id: i64,
    pub uid: String,
    pub name: String,
    pub kind: String,
    pub access: String,
    pub url: String,
    pub user: String,
    pub database: String,
    pub basic_auth: bool,
    pub basic_auth_user: String,
    pub with_credentials: bool,
    pub is_default: bool,
    pub json_data: Value,
    pub secure_json_data: BTreeMap<String, String>,
    pub version: i64,
    pub read_only: bool,
}

impl DataSource {
    /// Grafana's `dtos.DataSource` (`pkg/api/datasources.go` `convertModelToDtos`): the
    /// secrets never leave the server; `secureJsonFields` names the non-empty ones.
    pub fn to_dto(&self) -> Value {
        let secure_fields: Map<String, Value> = self
            .secure_json_data
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| (k.clone(), Value::Bool(true)))
            .collect();
        json!({
            "id": self.id,
            "uid": self.uid,
            "orgId": self.org_id,
            "name": self.name,
            "type": self.kind,
            "typeLogoUrl": type_logo_url(&self.kind),
            "access": self.access,
            "url": self.url,
            "user": self.user,
            "database": self.database,
            "basicAuth": self.basic_auth,
            "basicAuthUser": self.basic_auth_user,
            "withCredentials": self.with_credentials,
            "isDefault": self.is_default,
            "jsonData": self.json_data,
            "secureJsonFields": secure_fields,
            "version": self.version,
            "readOnly": self.read_only,
        })
    }

    /// Grafana's `dtos.DataSourceListItemDTO` (`GetDataSources`): no version, no
    /// `secureJsonFields`, no `basicAuthUser`/`withCredentials`.
    pub fn to_list_item(&self) -> Value {
        json!({
            "id": self.id,
            "uid": self.uid,
            "orgId": self.org_id,
            "name": self.name,
            "type": self.kind,
            "typeName": self.kind,
            "typeLogoUrl": type_logo_url(&self.kind),
            "access": self.access,
            "url": self.url,
            "user": self.user,
            "database": self.database,
            "basicAuth": self.basic_auth,
            "isDefault": self.is_default,
            "jsonData": self.json_data,
            "readOnly": self.read_only,
        })
    }
}

/// Grafana fills `typeLogoUrl` from the plugin; unknown types get the generic icon.
fn type_logo_url(kind: &str) -> String {
    match kind {
        "prometheus" => "public/app/plugins/datasource/prometheus/img/prometheus_logo.svg".to_string(),
        "loki" => "public/app/plugins/datasource/loki/img/loki_icon.svg".to_string(),
        "alertmanager" => "public/app/plugins/datasource/alertmanager/img/logo.svg".to_string(),
        _ => "public/img/icn-datasource.svg".to_string(),
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Dashboard {
    pub id: i64,
    pub org_id: i64,
    pub uid: String,
    pub title: String,
    pub slug: String,
    pub version: i64,
    pub folder_uid: String,
    /// The dashboard model as saved, with `id`, `uid`, `title` and `version` set by the
    /// server.
    pub data: Value,
    pub created: String,
    pub updated: String,
    pub created_by: i64,
    pub updated_by: i64,
}

impl Dashboard {
    pub fn url(&self) -> String {
        format!("/d/{}/{}", self.uid, self.slug)
    }

    pub fn tags(&self) -> Vec<Value> {
        match self.data.get("tags") {
            Some(Value::Array(tags)) => tags.iter().filter(|t| t.is_string()).cloned().collect(),
            _ => Vec::new(),
        }
    }
}

/// `value.to_lowercase() == lower` without allocating for ASCII values (the server scans
/// every user on each look-up; at 10,000 users an allocation per comparison made the test
/// server, not the controller, the bottleneck of the Grafana benchmark).
fn lower_eq(value: &str, lower: &str) -> bool {
    if value.is_ascii() {
        value.len() == lower.len() && value.bytes().zip(lower.bytes()).all(|(a, b)| a.to_ascii_lowercase() == b)
    } else {
        value.to_lowercase() == lower
    }
}

/// Everything the server stores.
#[derive(Debug)]
pub(crate) struct Db {
    pub orgs: BTreeMap<i64, Org>,
    pub users: BTreeMap<i64, User>,
    /// (org id, user id) -> role.
    pub members: BTreeMap<(i64, i64), Role>,
    pub datasources: BTreeMap<i64, DataSource>,
    pub dashboards: BTreeMap<i64, Dashboard>,
    next_org_id: i64,
    next_user_id: i64,
    next_datasource_id: i64,
    next_dashboard_id: i64,
    uid_seed: u64,
}

impl Db {
    /// A fresh Grafana: org 1 "Main Org." and the admin user (id 1, server admin, Admin of
    /// org 1), as `pkg/services/sqlstore/sqlstore.go` `ensureMainOrgAndAdminUser` creates.
    pub fn new(admin_user: &str, admin_password: &str) -> Db {
        let now = super::util::now_rfc3339();
        let mut db = Db {
            orgs: BTreeMap::new(),
            users: BTreeMap::new(),
            members: BTreeMap::new(),
            datasources: BTreeMap::new(),
            dashboards: BTreeMap::new(),
            next_org_id: 1,
            next_user_id: 1,
            next_datasource_id: 1,
            next_dashboard_id: 1,
            uid_seed: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9e37_79b9_7f4a_7c15)
                | 1,
        };
        let org_id = db.insert_org("Main Org.");
        let user_id = db.next_user_id;
        db.next_user_id += 1;
        db.users.insert(
            user_id,
            User {
                id: user_id,
                login: admin_user.to_string(),
                email: "admin@localhost".to_string(),
                name: String::new(),
                password: Some(admin_password.to_string()),
                is_admin: true,
                org_id,
                is_external: false,
                externally_synced: false,
                created: now.clone(),
                updated: now,
            },
        );
        db.members.insert((org_id, user_id), Role::Admin);
        db
    }

    pub fn insert_org(&mut self, name: &str) -> i64 {
        let id = self.next_org_id;
        self.next_org_id += 1;
        self.orgs.insert(id, Org { id, name: name.to_string() });
        id
    }

    pub fn org_by_name(&self, name: &str) -> Option<&Org> {
        self.orgs.values().find(|o| o.name == name)
    }

    /// Creates a user, member of `new.org_id` with `new.role`.
    pub fn insert_user(&mut self, new: NewUser<'_>) -> i64 {
        let now = super::util::now_rfc3339();
        let id = self.next_user_id;
        self.next_user_id += 1;
        self.users.insert(
            id,
            User {
                id,
                login: new.login.to_string(),
                email: new.email.to_string(),
                name: new.name.to_string(),
                password: new.password.map(str::to_string),
                is_admin: false,
                org_id: new.org_id,
                is_external: new.is_external,
                externally_synced: false,
                created: now.clone(),
                updated: now,
            },
        );
        self.members.insert((new.org_id, id), new.role);
        id
    }

    /// Grafana's `GetUserByLogin` with `LoginOrEmail`: login first, then email
    /// (case-insensitively, as Grafana 10+ does by default).
    pub fn user_by_login_or_email(&self, login_or_email: &str) -> Option<&User> {
        let wanted = login_or_email.to_lowercase();
        self.users
            .values()
            .find(|u| lower_eq(&u.login, &wanted))
            .or_else(|| self.users.values().find(|u| !u.email.is_empty() && lower_eq(&u.email, &wanted)))
    }

    /// Whether another user already has this login or email (Grafana's
    /// `ErrUserAlreadyExists` check compares both against both).
    pub fn login_or_email_taken(&self, login: &str, email: &str) -> bool {
        let login = login.to_lowercase();
        let email = email.to_lowercase();
        self.users.values().any(|u| {
            let (ul, ue) = (&u.login, &u.email);
            lower_eq(ul, &login)
                || (!email.is_empty() && (lower_eq(ue, &email) || lower_eq(ul, &email)))
                || (!ue.is_empty() && lower_eq(ue, &login))
        })
    }

    /// The org a signed-in user works in when no `X-Grafana-Org-Id` is sent: their current
    /// org while they are still a member, else any org they belong to.
    pub fn current_org_of(&self, user: &User) -> i64 {
        if self.members.contains_key(&(user.org_id, user.id)) {
            return user.org_id;
        }
        self.members.keys().find(|(_, u)| *u == user.id).map(|(o, _)| *o).unwrap_or(-1)
    }

    pub fn memberships_of(&self, user_id: i64) -> Vec<(i64, Role)> {
        self.members.iter().filter(|((_, u), _)| *u == user_id).map(|((o, _), r)| (*o, *r)).collect()
    }

    pub fn org_admin_count(&self, org_id: i64) -> usize {
        self.members.iter().filter(|((o, _), r)| *o == org_id && **r == Role::Admin).count()
    }

    /// Removes a membership; a user whose current org it was moves to another org of theirs.
    pub fn remove_member(&mut self, org_id: i64, user_id: i64) {
        self.members.remove(&(org_id, user_id));
        let other = self.members.keys().find(|(_, u)| *u == user_id).map(|(o, _)| *o);
        if let Some(user) = self.users.get_mut(&user_id)
            && user.org_id == org_id
            && let Some(other) = other
        {
            user.org_id = other;
        }
    }

    /// Grafana's `DeleteOrg`: the org and everything scoped to it.
    pub fn delete_org(&mut self, org_id: i64) {
        self.orgs.remove(&org_id);
        let members: Vec<i64> = self.members.keys().filter(|(o, _)| *o == org_id).map(|(_, u)| *u).collect();
        for user_id in members {
            self.remove_member(org_id, user_id);
        }
        self.datasources.retain(|_, ds| ds.org_id != org_id);
        self.dashboards.retain(|_, d| d.org_id != org_id);
    }

    pub fn delete_user(&mut self, user_id: i64) {
        self.users.remove(&user_id);
        self.members.retain(|(_, u), _| *u != user_id);
    }

    pub fn next_datasource_id(&mut self) -> i64 {
        let id = self.next_datasource_id;
        self.next_datasource_id += 1;
        id
    }

    pub fn next_dashboard_id(&mut self) -> i64 {
        let id = self.next_dashboard_id;
        self.next_dashboard_id += 1;
        id
    }

    pub fn datasource_by_uid(&self, org_id: i64, uid: &str) -> Option<&DataSource> {
        self.datasources.values().find(|d| d.org_id == org_id && d.uid == uid)
    }

    pub fn dashboard_by_uid(&self, org_id: i64, uid: &str) -> Option<&Dashboard> {
        self.dashboards.values().find(|d| d.org_id == org_id && d.uid == uid)
    }

    /// A short uid like Grafana's `util.GenerateShortUID` (14 characters of [a-z0-9]).
    pub fn generate_uid(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut out = String::with_capacity(14);
        for _ in 0..14 {
            // xorshift64
            let mut x = self.uid_seed;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.uid_seed = x;
            out.push(ALPHABET[(x % ALPHABET.len() as u64) as usize] as char);
        }
        out
    }
}
