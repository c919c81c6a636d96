<?php

/*
 * strata_portal: Roundcube's side of Strata's login rules.
 *
 * - Whose login is it: before each IMAP login, Roundcube tells Strata the address of the browser
 *   it logs in for, in an IMAP ID sent before authentication ("preauth_ident", Roundcube #7860):
 *   ID ("x-originating-ip" "<address>"), Dovecot's convention, which Strata honours only from its
 *   trusted networks.  Strata then slows a password guesser at the guesser's address, and never
 *   every webmail user for one guesser.  (Submission gets the same address through XCLIENT ADDR:
 *   smtp_xclient_addr in config.inc.php.)  The address is rcube_utils::remote_addr(): behind a
 *   reverse proxy, list the proxy in proxy_whitelist (STRATA_PROXIES) so that it is the browser's.
 * - A closed portal: when Strata refuses a login because the domain's webmail portal is closed
 *   (IMAP "NO [UNAVAILABLE] Your primary mail server is working; ..."), show the user Strata's
 *   sentence instead of Roundcube's bare "Login failed.".  A wrong password still shows
 *   "Login failed.": Strata gives it no reason, so that a stranger learns nothing.
 *
 * Install: Roundcube loads plugins only from its own plugins directory.  Debian's roundcube-core:
 *     ln -s "$PWD/roundcube-config/plugins/strata_portal" /var/lib/roundcube/plugins/
 * The official image: mount this directory at /var/www/html/plugins/strata_portal
 * (webmail/compose.yaml does).  roundcube-config/config.inc.php enables it.
 */
class strata_portal extends rcube_plugin
{
    // Every task: Roundcube logs in to IMAP on every request, not only on the login page.

    public function init()
    {
        $this->add_hook('storage_connect', [$this, 'storage_connect']);
        $this->add_hook('login_failed', [$this, 'login_failed']);
    }

    public function storage_connect($args)
    {
        $address = rcube_utils::remote_addr();
        if (filter_var($address, FILTER_VALIDATE_IP)) {
            $ident = isset($args['preauth_ident']) && is_array($args['preauth_ident'])
                ? $args['preauth_ident'] : [];
            $ident['x-originating-ip'] = $address;
            $args['preauth_ident'] = $ident;
        }
        return $args;
    }

    public function login_failed($args)
    {
        $rcmail = rcmail::get_instance();
        $storage = $rcmail->storage;
        if ($storage instanceof rcube_imap && $storage->conn
            && strtoupper((string) $storage->conn->resultcode) === 'UNAVAILABLE') {
            // get_error_str() reads "NO: <text>"; the user sees only Strata's text.
            $text = preg_replace('/^[A-Z0-9 -]+: /', '', (string) $storage->get_error_str());
            $rcmail->output->reset();
            $rcmail->output->show_message(rcube::Q($text), 'warning');
        }
        return $args;
    }
}
