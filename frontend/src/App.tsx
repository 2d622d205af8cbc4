import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { type ReactNode, createContext, lazy, Suspense, useContext, useEffect, useMemo, useRef, useState } from "react";
import { BrowserRouter, Link, NavLink, Route, Routes } from "react-router-dom";
import { type ApiClient, createApi } from "./api/client";
import { CALLBACK_PATH, SessionProvider, useAuth, useSession } from "./auth/session";
import type { AppConfig } from "./config";
import { UploadPage } from "./upload/UploadPage";
import { WorklistPage } from "./worklist/WorklistPage";

// The study view (viewer, annotation tool) is its own chunk; DICOM code
// inside it is loaded only when a DICOM study is opened.
const StudyPage = lazy(() => import("./study/StudyPage"));

export const NOT_A_DIAGNOSIS = "AI output, not a diagnosis. A clinician must review every image.";

const ApiContext = createContext<ApiClient | null>(null);
export function useApi(): ApiClient {
  const api = useContext(ApiContext);
  if (!api) throw new Error("useApi outside the signed-in app");
  return api;
}

export function App({ config }: { config: AppConfig }) {
  return (
    <SessionProvider config={config}>
      <BrowserRouter>
        <SignedIn config={config} />
      </BrowserRouter>
    </SessionProvider>
  );
}

function SignedIn({ config }: { config: AppConfig }) {
  const auth = useAuth();
  const session = useSession(config);
  const tokenRef = useRef(session.token);
  tokenRef.current = session.token;
  const { markExpired } = session;
  const api = useMemo(
    () => createApi({ baseUrl: config.apiUrl, token: () => tokenRef.current, onUnauthorized: markExpired }),
    [config.apiUrl, markExpired],
  );
  const [queries] = useState(
    () => new QueryClient({ defaultOptions: { queries: { retry: (n, e) => n < 2 && (e as { problem?: { status: number } }).problem?.status !== 401, staleTime: 2000 } } }),
  );

  if (auth.isLoading || window.location.pathname === CALLBACK_PATH) {
    return <Shell>{auth.error ? <SignInScreen onSignIn={session.signIn} error={auth.error.message} /> : <p className="page">Signing in…</p>}</Shell>;
  }
  if (!session.token) {
    return (
      <Shell>
        <SignInScreen onSignIn={session.signIn} expired={session.expired} error={auth.error?.message} />
      </Shell>
    );
  }
  return (
    <ApiContext.Provider value={api}>
      <QueryClientProvider client={queries}>
        <Shell userName={session.userName} onSignOut={session.signOut}>
          {session.expired && (
            <div className="banner" role="alert">
              Your session has ended. <button type="button" onClick={session.signIn}>Sign in again</button> (unsaved boxes are kept on this page).
            </div>
          )}
          <Suspense fallback={<p className="page">Loading…</p>}>
            <Routes>
              <Route path="/" element={<WorklistPage />} />
              <Route path="/upload" element={<UploadPage />} />
              <Route path="/studies/:id" element={<StudyPage />} />
              <Route path="*" element={<main className="page"><h1>Not found</h1><Link to="/">Back to the worklist</Link></main>} />
            </Routes>
          </Suspense>
        </Shell>
      </QueryClientProvider>
    </ApiContext.Provider>
  );
}

function SignInScreen({ onSignIn, expired, error }: { onSignIn: () => void; expired?: boolean; error?: string }) {
  return (
    <main className="page sign-in">
      <h1>Chest X-ray findings</h1>
      {expired && <p role="alert">Your session has ended. Sign in again to continue.</p>}
      {error && <p role="alert">Sign-in failed: {error}</p>}
      <p>Upload chest X-rays, read the model's findings, and annotate them.</p>
      <button type="button" className="primary" onClick={onSignIn}>
        Sign in
      </button>
    </main>
  );
}

function useTheme(): [string, () => void] {
  const [theme, setTheme] = useState(() => localStorage.getItem("theme") ?? "dark");
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem("theme", theme);
  }, [theme]);
  return [theme, () => setTheme((t) => (t === "dark" ? "light" : "dark"))];
}

function Shell({ children, userName, onSignOut }: { children: ReactNode; userName?: string; onSignOut?: () => void }) {
  const [theme, toggleTheme] = useTheme();
  return (
    <>
      <header className="top">
        <a className="skip" href="#main">
          Skip to content
        </a>
        <span className="brand">CXR findings</span>
        {userName && (
          <nav aria-label="Main">
            <NavLink to="/" end>
              Worklist
            </NavLink>
            <NavLink to="/upload">Upload</NavLink>
          </nav>
        )}
        <span className="spacer" />
        <button type="button" onClick={toggleTheme} aria-pressed={theme === "light"}>
          {theme === "dark" ? "Light theme" : "Dark theme"}
        </button>
        {userName && (
          <>
            <span className="user">Signed in as {userName}</span>
            <button type="button" onClick={onSignOut}>
              Sign out
            </button>
          </>
        )}
      </header>
      <div id="main">{children}</div>
      <footer className="notice">
        {NOT_A_DIAGNOSIS}
      </footer>
    </>
  );
}
