<?php

/*
 * Roundcube configuration for Strata's continuity webmail.
 *
 * During an outage, users log in to Roundcube with their usual credentials; Roundcube talks IMAP to
 * Strata (their shadow mailboxes) and sends through Strata's SMTP submission.  This file holds only
 * what Strata needs; everything else keeps Roundcube's defaults.  Settings come from environment
 * variables, so one file serves every deployment:
 *
 *   STRATA_IMAP_HOST     Strata's IMAP service, Roundcube syntax: "host:port", "tls://host:143"
 *                        (STARTTLS) or "ssl://host:993".  Default: localhost:2143 (the embedded
 *                        default of `twistd -n strata`).
 *   STRATA_SMTP_HOST     Strata's submission service, same syntax.  Default: localhost:2587.
 *   STRATA_PRODUCT_NAME  The name shown on the login page and in the title (white-labelling).
 *                        Default: "Webmail".
 *   STRATA_LOGO          URL or path of the logo (white-labelling).  Default: Roundcube's.
 *   STRATA_SUPPORT_URL   Where "Get support" points (the reseller's help desk).  Default: none.
 *   STRATA_ADMIN_URL     Strata's admin listener as Roundcube reaches it ("http://127.0.0.1:8080"):
 *                        the strata_branding plugin asks it, on each request, for the brand of the
 *                        host name the webmail is served under (a reseller's white-label host),
 *                        which then replaces the three settings above.  Default: none (off).
 *   STRATA_CA_FILE       The CA certificate (PEM) that signed Strata's certificate, when it is not
 *                        one the system trusts (a private CA, or Strata's own self-signed one):
 *                        PHP verifies tls:// and ssl:// hosts.  Default: the system's CAs.
 *   STRATA_PROXIES       The addresses of the HTTPS reverse proxy in front of Roundcube, as
 *                        Roundcube sees them, comma-separated (proxy_whitelist): Roundcube then
 *                        takes the browser's address from X-Forwarded-For and passes it to
 *                        Strata (see below).  Default: none (the address that connects).
 *
 * Official image (roundcube/roundcubemail): mount this file as /var/roundcube/config/strata.php
 * (see webmail/compose.yaml).  Debian's roundcube-core: add
 *     include '/path/to/roundcube-config/config.inc.php';
 * at the end of /etc/roundcube/config.inc.php (that file is read last and would override this one).
 * Both are described in webmail/README.md.
 */

$strata_setting = static function (string $name, string $default): string {
    $value = getenv($name);
    return ($value === false || $value === '') ? $default : $value;
};

// Strata's services.  The users' login is their full address; Strata checks it against the
// passwords synced from the primary (`strata user import`), and submission takes the same login.
$config['imap_host'] = $strata_setting('STRATA_IMAP_HOST', 'localhost:2143');
$config['smtp_host'] = $strata_setting('STRATA_SMTP_HOST', 'localhost:2587');
$config['smtp_user'] = '%u';
$config['smtp_pass'] = '%p';
// Roundcube prefers AUTH LOGIN for SMTP and DIGEST-MD5/CRAM-MD5 for IMAP when offered; Strata
// offers PLAIN (and LOGIN), so ask for PLAIN on both.
$config['imap_auth_type'] = 'PLAIN';
$config['smtp_auth_type'] = 'PLAIN';
// PHP verifies the certificate of tls:// and ssl:// hosts against the system's CAs, and the host
// name in STRATA_IMAP_HOST must match it.  Name another CA file here when needed.
$strata_ca = $strata_setting('STRATA_CA_FILE', '');
if ($strata_ca !== '') {
    $config['imap_conn_options'] = ['ssl' => ['cafile' => $strata_ca]];
    $config['smtp_conn_options'] = ['ssl' => ['cafile' => $strata_ca]];
}
// Strata slows a password guesser down at the guesser's own address, so Roundcube tells it the
// browser's address with every login: in IMAP, an ID before authentication naming
// "x-originating-ip" (plugins/strata_portal, which must be installed in Roundcube's plugins
// directory); in submission, XCLIENT ADDR, which Strata offers to its trusted networks.
// Strata honours both only from its trusted networks (imap/submission.trusted_networks and
// loopback).  The same plugin shows a closed portal's sentence (NO [UNAVAILABLE]) instead of
// "Login failed.".
$config['plugins'] = array_merge($config['plugins'] ?? [], ['strata_portal']);
$config['smtp_xclient_addr'] = true;
// Roundcube's own brute-force "prevention" (login_rate_limit, default 3) refuses every login of a
// user for a minute after 3 failures for that user from anywhere: anyone could keep anyone
// locked out of the webmail.  Strata slows the guesser instead, at the guesser's address.
$config['login_rate_limit'] = 0;
$strata_proxies = $strata_setting('STRATA_PROXIES', '');
if ($strata_proxies !== '') {
    $config['proxy_whitelist'] = array_values(array_filter(array_map('trim',
        explode(',', $strata_proxies))));
}

// White-labelling.
$config['product_name'] = $strata_setting('STRATA_PRODUCT_NAME', 'Webmail');
$strata_logo = $strata_setting('STRATA_LOGO', '');
if ($strata_logo !== '') {
    $config['skin_logo'] = $strata_logo;
}
$config['support_url'] = $strata_setting('STRATA_SUPPORT_URL', '');
$config['useragent'] = '';  // do not announce Roundcube's version in sent mail
// Per host name: a reseller's brand from Strata (plugins/strata_branding, installed like
// strata_portal), cached for a minute in temp_dir; Strata not answering leaves the look above.
$config['strata_branding_url'] = $strata_setting('STRATA_ADMIN_URL', '');
$config['strata_branding_ttl'] = 60;
$config['strata_branding_timeout'] = 2;
$config['plugins'][] = 'strata_branding';

// Strata's IMAP server.  It creates INBOX, Sent, Drafts, Trash and Junk for every user, marked
// with SPECIAL-USE and subscribed (Roundcube shows only subscribed folders), uses "/" as the
// hierarchy delimiter, and offers MOVE and UIDPLUS, so a delete moves one message to Trash and
// never expunges the rest of the folder.
$config['create_default_folders'] = false;
$config['drafts_mbox'] = 'Drafts';
$config['junk_mbox'] = 'Junk';
$config['sent_mbox'] = 'Sent';
$config['trash_mbox'] = 'Trash';
$config['default_folders'] = ['INBOX', 'Drafts', 'Sent', 'Junk', 'Trash'];
$config['imap_delimiter'] = '/';
// The server is next door and the mailboxes change under Roundcube (new mail through intake):
// no client-side IMAP or message cache to go stale.
$config['imap_cache'] = null;
$config['messages_cache'] = false;

// Sessions: continuity webmail is used from anywhere, for days at most.
$config['session_lifetime'] = 30;  // minutes of inactivity
$config['ip_check'] = true;
$config['login_autocomplete'] = 0;
$config['x_frame_options'] = 'sameorigin';

unset($strata_setting, $strata_logo, $strata_ca, $strata_proxies);
