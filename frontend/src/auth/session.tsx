// Sign-in: OpenID Connect authorization code with PKCE (oidc-client-ts via
// react-oidc-context), against Cognito's hosted UI in AWS and the local
// OpenID provider on the local stack: the same code in both. The API gets
// the ID token as its bearer token (API Gateway's JWT authorizer checks its
// signature, issuer, audience = this app's client id, and expiry).
import { WebStorageStateStore } from "oidc-client-ts";
import { type ReactNode, createContext, useCallback, useContext, useMemo, useState } from "react";
import { AuthProvider, useAuth } from "react-oidc-context";
import type { AppConfig } from "../config";

export const CALLBACK_PATH = "/auth/callback";

export function SessionProvider({ config, children }: { config: AppConfig; children: ReactNode }) {
  const origin = window.location.origin;
  return (
    <AuthProvider
      authority={config.oidcAuthority}
      client_id={config.oidcClientId}
      redirect_uri={`${origin}${CALLBACK_PATH}`}
      post_logout_redirect_uri={`${origin}/`}
      scope={config.oidcScope ?? "openid profile"}
      userStore={new WebStorageStateStore({ store: window.sessionStorage })}
      automaticSilentRenew={false}
      onSigninCallback={(user) => {
        const back = (user?.state as { path?: string } | undefined)?.path ?? "/";
        window.history.replaceState({}, document.title, back);
        // Tell the router the address changed (it listens to popstate).
        window.dispatchEvent(new PopStateEvent("popstate"));
      }}
    >
      <ExpiryProvider>{children}</ExpiryProvider>
    </AuthProvider>
  );
}

interface Expiry {
  expired: boolean;
  markExpired: () => void;
}
const ExpiryContext = createContext<Expiry>({ expired: false, markExpired: () => {} });

/** Remembers that the API refused the session (401), to ask for a new sign-in. */
function ExpiryProvider({ children }: { children: ReactNode }) {
  const [expired, setExpired] = useState(false);
  const markExpired = useCallback(() => setExpired(true), []);
  const value = useMemo(() => ({ expired, markExpired }), [expired, markExpired]);
  return <ExpiryContext.Provider value={value}>{children}</ExpiryContext.Provider>;
}

export interface Session {
  token?: string;
  userName?: string;
  expired: boolean;
  markExpired: () => void;
  signIn: () => Promise<void>;
  signOut: () => Promise<void>;
}

export function useSession(config: AppConfig): Session {
  const auth = useAuth();
  const { expired, markExpired } = useContext(ExpiryContext);
  const user = auth.user;
  const token = user && !user.expired ? user.id_token : undefined;
  const path = window.location.pathname + window.location.search;
  return {
    token,
    userName: (user?.profile.preferred_username as string | undefined) ?? user?.profile.sub,
    expired: expired || Boolean(user?.expired),
    markExpired,
    signIn: () => auth.signinRedirect({ state: { path: path.startsWith(CALLBACK_PATH) ? "/" : path } }),
    signOut: async () => {
      await auth.removeUser();
      if (config.oidcLogoutUrl) {
        // Cognito signs out at its own /logout, not the standard end-session endpoint.
        const url = new URL(config.oidcLogoutUrl);
        url.searchParams.set("client_id", config.oidcClientId);
        url.searchParams.set("logout_uri", `${window.location.origin}/`);
        window.location.assign(url.toString());
      } else {
        await auth.signoutRedirect({ id_token_hint: user?.id_token });
      }
    },
  };
}

export { useAuth };
