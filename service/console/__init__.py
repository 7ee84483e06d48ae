"""The web console: read-only HTML pages over a tenant's edits, models, audits, promotions and studies, served by the
API itself (server-rendered, no scripts, nothing from another origin). `routes` declares the pages, `views` reads
what they show through the caller's tenant session, `auth` signs in with an API key kept in a cookie, `headers`
sets the pages' security headers. EDITAUDIT_CONSOLE=false leaves it out of the app (docs/console.md)."""
